"""MoEfication baseline (Zhang et al. 2022 [673]; thesis Sec. 3.1, Fig. 3.4; spec ch2_acm B.5).

A dense ViT becomes a mixture of experts in three steps, without training new experts:
1. ReLUfication: every MLP activation GELU -> ReLU (`relufy`), then ordinary fine-tuning, so that
   most hidden neurons are exactly zero for a given token.
2. Split: the d_ff neurons of each MLP are grouped into equal-size experts by balanced k-means on
   the L2-normalised rows of W1 (`balanced_clusters`); expert e is the rows of W1 (+ b1) and the
   columns of W2 of its neurons, so running all experts is the dense MLP (`MoEfiedMLP`).
3. Routers: per MLP, a 2-layer tanh MLP without biases scores the experts of a token and is
   trained with BCE-with-logits against each expert's summed ReLU activation, normalised by the
   token's largest expert sum (`router_targets`, `MoEficationRouterModule`; the official recipe).
At inference each token runs its top-k experts; one training gives a whole accuracy-vs-FLOPs
curve by sweeping k (`evaluate_topk`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader

from thesis.acm.evaluation import evaluate_classifier
from thesis.condcomp.gumbel import topk_mask
from thesis.core.modules import SupervisedModule


def relufy(vit: nn.Module) -> nn.Module:
    """Replace the MLP activation of every block by ReLU, in place (MoEfication's "ReLUfication").

    Only the FFN activations change (spec B.5); the model is then fine-tuned as usual. Returns
    the same model for chaining.
    """
    for block in vit.blocks:
        block.mlp.act = nn.ReLU()
    return vit


def _kmeans_plus_plus(points: np.ndarray, num_clusters: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding (Arthur & Vassilvitskii 2007): each next centre drawn with probability
    proportional to the squared distance to the nearest centre chosen so far."""
    centres = [points[rng.integers(len(points))]]
    nearest = ((points - centres[0]) ** 2).sum(1)
    for _ in range(1, num_clusters):
        total = nearest.sum()
        index = rng.choice(len(points), p=nearest / total) if total > 0 else rng.integers(len(points))
        centres.append(points[index])
        nearest = np.minimum(nearest, ((points - centres[-1]) ** 2).sum(1))
    return np.stack(centres)


def _balanced_assignment(distances: np.ndarray, capacity: int) -> np.ndarray:
    """Greedy balanced matching: take (point, cluster) pairs by increasing distance and assign a
    point to the cluster of its pair if the point is still free and the cluster not yet full.

    Every cluster ends with exactly `capacity` points when n = capacity x clusters; it stands in
    for the min-cost-flow of `k-means-constrained` used by the official code.
    """
    num_points, num_clusters = distances.shape
    labels = np.full(num_points, -1, dtype=np.int64)
    fill = np.zeros(num_clusters, dtype=np.int64)
    assigned = 0
    for pair in np.argsort(distances, axis=None, kind="stable"):
        point, cluster = divmod(int(pair), num_clusters)
        if labels[point] < 0 and fill[cluster] < capacity:
            labels[point] = cluster
            fill[cluster] += 1
            assigned += 1
            if assigned == num_points:
                break
    return labels


def balanced_clusters(weight_rows: np.ndarray, num_experts: int, seed: int = 0, iterations: int = 50) -> np.ndarray:
    """Cluster of each of the d_ff neurons, every cluster of exactly d_ff / num_experts neurons.

    MoEfication's parameter split [673]: balanced k-means on the L2-normalised rows of W1 (one row
    per neuron), so neurons with similar input weights, which tend to fire together, share an
    expert. k-means++ seeding, then Lloyd iterations whose assignment step is the greedy balanced
    matching, until the assignment stops changing.
    """
    num_neurons = len(weight_rows)
    if num_neurons % num_experts:
        raise ValueError(f"{num_neurons} neurons do not split into {num_experts} equal experts")
    points = weight_rows / np.maximum(np.linalg.norm(weight_rows, axis=1, keepdims=True), 1e-12)
    rng = np.random.default_rng(seed)
    centres = _kmeans_plus_plus(points, num_experts, rng)
    labels = np.full(num_neurons, -1, dtype=np.int64)
    for _ in range(iterations):
        distances = (centres**2).sum(1)[None, :] - 2 * points @ centres.T  # + |p|^2, same for all clusters
        new_labels = _balanced_assignment(distances, num_neurons // num_experts)
        if np.array_equal(new_labels, labels):
            break
        labels = new_labels
        centres = np.stack([points[labels == c].mean(0) for c in range(num_experts)])
    return labels


class MoEfiedMLP(nn.Module):
    """A ReLU timm `Mlp` split into experts plus a router; runs each token's top-k experts.

    Expert e holds rows of W1 / b1 and the matching columns of W2 (`w1`: (E, m, d_in), `b1`:
    (E, m), `w2`: (E, d_out, m)); b2 is always added. Without weighting by router scores, the sum
    of all E experts is the dense MLP, so `k = num_experts` reproduces it. `last_dispatch` keeps
    the (tokens..., E) boolean routing of the last call for compute accounting.
    """

    def __init__(self, mlp: nn.Module, clusters: np.ndarray, router_hidden: int = 128):
        super().__init__()
        if not isinstance(mlp.act, nn.ReLU) or not isinstance(mlp.norm, nn.Identity):
            raise ValueError("MoEfication needs a ReLU Mlp without hidden norm: call relufy first")
        labels = torch.as_tensor(np.asarray(clusters), dtype=torch.long)
        sizes = torch.bincount(labels)
        if not torch.all(sizes == sizes[0]):
            raise ValueError(f"experts must have equal sizes, got {sizes.tolist()}")
        self.num_experts, size = len(sizes), int(sizes[0])
        order = torch.argsort(labels, stable=True)  # neurons grouped by expert
        fc1, fc2 = mlp.fc1, mlp.fc2
        d_in, d_out = fc1.in_features, fc2.out_features
        with torch.no_grad():  # indexing copies, so the experts share no storage with the Mlp
            b1 = fc1.bias if fc1.bias is not None else fc1.weight.new_zeros(fc1.out_features)
            b2 = fc2.bias if fc2.bias is not None else fc2.weight.new_zeros(d_out)
            self.w1 = nn.Parameter(fc1.weight[order].reshape(self.num_experts, size, d_in))
            self.b1 = nn.Parameter(b1[order].reshape(self.num_experts, size))
            w2 = fc2.weight[:, order].reshape(d_out, self.num_experts, size)
            self.w2 = nn.Parameter(w2.transpose(0, 1).contiguous())
        self.b2 = nn.Parameter(b2.clone())
        self.act, self.drop1, self.drop2 = mlp.act, mlp.drop1, mlp.drop2
        like = {"dtype": fc1.weight.dtype, "device": fc1.weight.device}
        self.router = nn.Sequential(nn.Linear(d_in, router_hidden, bias=False, **like), nn.Tanh(),
                                    nn.Linear(router_hidden, self.num_experts, bias=False, **like))
        self.k = self.num_experts
        self.last_dispatch: Tensor | None = None

    @property
    def experts_per_token(self) -> Tensor:
        """Experts run on each token in the last call, shaped like the tokens (a compute map)."""
        return self.last_dispatch.sum(-1)

    def hidden(self, x: Tensor) -> Tensor:
        """Dense ReLU activations grouped by expert, (..., E, m): what routers are trained on."""
        flat_w1 = self.w1.reshape(-1, self.w1.shape[-1])
        return self.act(F.linear(x, flat_w1, self.b1.reshape(-1))).unflatten(-1, self.w1.shape[:2])

    def forward(self, x: Tensor) -> Tensor:
        if not 1 <= self.k <= self.num_experts:
            raise ValueError(f"k={self.k} outside 1..{self.num_experts}")
        dispatch = topk_mask(self.router(x), self.k)
        self.last_dispatch = dispatch
        return self.execute(x, dispatch)

    def execute(self, x: Tensor, dispatch: Tensor) -> Tensor:
        """Sum of the dispatched experts per token plus b2; each expert runs only on its tokens."""
        flat_x = x.reshape(-1, x.shape[-1])
        flat_dispatch = dispatch.reshape(-1, self.num_experts)
        out = flat_x.new_zeros(flat_x.shape[0], self.w2.shape[1])
        for e in range(self.num_experts):
            idx = flat_dispatch[:, e].nonzero(as_tuple=True)[0]
            if idx.numel():
                h = self.drop1(self.act(F.linear(flat_x[idx], self.w1[e], self.b1[e])))
                out = out.index_add(0, idx, F.linear(h, self.w2[e]))
        return self.drop2(out + self.b2).reshape(*x.shape[:-1], -1)


def moefied(model: nn.Module) -> dict[str, MoEfiedMLP]:
    """Every MoEfied MLP of a model, by module path."""
    return {name: m for name, m in model.named_modules() if isinstance(m, MoEfiedMLP)}


def moefy(vit: nn.Module, num_experts: int, router_hidden: int = 128, seed: int = 0) -> dict[str, MoEfiedMLP]:
    """Replace every block's (ReLU) MLP by its MoEfied version in place; returns {path: module}.

    Experts come from `balanced_clusters` of each fc1's rows; k starts at num_experts (the dense
    MLP), so the model is unchanged until routers are trained and k is lowered.
    """
    replaced = {}
    for i, block in enumerate(vit.blocks):
        clusters = balanced_clusters(block.mlp.fc1.weight.detach().cpu().numpy(), num_experts, seed)
        block.mlp = MoEfiedMLP(block.mlp, clusters, router_hidden)
        replaced[f"blocks.{i}.mlp"] = block.mlp
    return replaced


@contextmanager
def top_k(layers: dict[str, MoEfiedMLP], k: int | None) -> Iterator[None]:
    """Temporarily run every layer with its top-k experts (None: all experts, the dense MLP),
    restoring each layer's own k afterwards."""
    saved = {name: layer.k for name, layer in layers.items()}
    for layer in layers.values():
        layer.k = layer.num_experts if k is None else k
    try:
        yield
    finally:
        for name, layer in layers.items():
            layer.k = saved[name]


@torch.no_grad()
def router_targets(mlp: MoEfiedMLP, x: Tensor) -> Tensor:
    """Per-token expert targets in [0, 1]: each expert's summed ReLU activation divided by the
    token's largest one (official MoEfication router recipe, spec B.5); all-zero tokens give 0."""
    sums = mlp.hidden(x).sum(-1)
    return sums / sums.amax(-1, keepdim=True).clamp_min(torch.finfo(sums.dtype).tiny)


def router_loss(mlp: MoEfiedMLP, x: Tensor) -> Tensor:
    """BCE-with-logits of the router scores against `router_targets` (one MoEfied layer)."""
    return F.binary_cross_entropy_with_logits(mlp.router(x), router_targets(mlp, x))


@contextmanager
def record_inputs(layers: dict[str, MoEfiedMLP]) -> Iterator[dict[str, Tensor]]:
    """Inputs of every MoEfied layer (by path) in the forward passes run inside the `with` block."""
    inputs: dict[str, Tensor] = {}

    def hook(name: str):
        def record(module, args):
            inputs[name] = args[0].detach()
        return record

    handles = [layer.register_forward_pre_hook(hook(name)) for name, layer in layers.items()]
    try:
        yield inputs
    finally:
        for handle in handles:
            handle.remove()


class MoEficationRouterModule(SupervisedModule):
    """Router training (MoEfication's last step): only routers learn, on the sum over layers of
    `router_loss`; the rest of the model is frozen and runs in eval mode.

    Training inputs are those of the dense ReLU model (every layer at k = E), as the official code
    fits routers to the dense model's hidden states; `train/acc` is therefore the dense accuracy. Validation and test run the model at the
    layers' current k, so `val/acc` is the top-k accuracy; their router loss is on those inputs.
    Logs `<split>/router_loss` next to the base class's loss and accuracy.
    """

    def __init__(self, model: nn.Module, lr: float = 1e-3, **optim):
        super().__init__(model, lr=lr, **optim)
        self.layers = moefied(model)
        if not self.layers:
            raise ValueError("the model has no MoEfied MLP: call moefy first")
        model.requires_grad_(False)
        for layer in self.layers.values():
            layer.router.requires_grad_(True)

    def loss_and_logits(self, batch):
        x, _ = batch
        self.model.eval()
        routing = top_k(self.layers, None) if self.training else nullcontext()
        with torch.no_grad(), routing, record_inputs(self.layers) as inputs:
            logits = self.model(x)
        loss = torch.stack([router_loss(layer, inputs[name]) for name, layer in self.layers.items()]).sum()
        return loss, logits, {"router_loss": loss}


def evaluate_topk(model: nn.Module, loader: DataLoader, ks: Sequence[int]) -> list[dict[str, object]]:
    """Accuracy and mean FLOPs per sample at every k of top-k routing (one trained model, a curve).

    FLOPs are counted on what runs (thesis.core.flops via `evaluate_classifier`): every non-MoE
    module, every router on every token, and only the executed experts. Each layer's k is
    restored afterwards.
    """
    layers = moefied(model)
    rows = []
    for k in ks:
        with top_k(layers, k):
            row, _ = evaluate_classifier(model, loader, "moefication", f"k={k}")
        rows.append({**row, "k": k})
    return rows

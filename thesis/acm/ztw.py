"""Zero Time Waste baseline (Wójcik et al. 2023 [611]; thesis Sec. 3.1, Fig. 3.4; spec ch2_acm B.5).

Early exits added to a frozen pre-trained ViT, in two training phases (thesis: 95 + 5 epochs):
1. Cascading heads (`ZTWHeadsModule`): one internal classifier after each of the blocks
   0..depth-2, reading the class token. Head i > 0 also receives the previous head's logits
   (layer-normalised and detached), so later heads reuse earlier predictions instead of starting
   from scratch (ZTW's "cascade connections"). Loss: cross-entropy summed over heads.
2. Geometric ensembles (`ZTWEnsembleModule`, heads frozen): the output at exit i combines the
   log-probabilities of heads 0..i, sum_j exp(w_ij) log p_j + b_i (ZTW's weighted geometric
   ensemble: a product of powered head distributions, renormalised by the softmax).
At inference a sample leaves at the first ensemble whose largest softmax probability exceeds the
threshold; the backbone's own classifier after the last block always accepts
(`evaluate_thresholds`: one training, a whole accuracy-vs-FLOPs curve).

External facts (ZTW paper / the ACM authors' code, not in the thesis): heads are 3-layer MLPs
with GELU (hidden width 8192 for ViT-B in the code), the cascaded logits pass a LayerNorm and are
detached, ensemble weights are per exit and per member, the backbone head gets no ensemble, and
the exit rule is "max probability > threshold" with thresholds linspace(0, 1).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader

from thesis.core.evaluate import progress
from thesis.core.flops import count_flops
from thesis.core.modules import SupervisedModule


class CascadingHead(nn.Module):
    """Internal classifier: MLP (GELU) on the class token, last layer also fed the previous logits.

    The previous head's logits are detached (each head is trained for its own prediction only)
    and layer-normalised (ZTW appendix, as in the authors' code) before being concatenated to the
    last hidden layer's input. The first head has no predecessor (`cascading=False`).
    """

    def __init__(self, dim: int, num_classes: int, hidden: int, num_layers: int = 3, cascading: bool = True):
        super().__init__()
        if num_layers < 1:
            raise ValueError("a head needs at least one layer")
        widths = [dim] + [hidden] * (num_layers - 1)
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.cascading = cascading
        self.previous_norm = nn.LayerNorm(num_classes) if cascading else None
        self.out = nn.Linear(widths[-1] + (num_classes if cascading else 0), num_classes)

    def forward(self, tokens: Tensor, previous: Tensor | None = None) -> Tensor:
        """`tokens` (B, T, D) after a block; `previous` (B, C) the previous head's logits."""
        x = tokens[:, 0]
        for layer in self.hidden:
            x = F.gelu(layer(x))
        if self.cascading:
            if previous is None:
                raise ValueError("a cascading head needs the previous head's logits")
            x = torch.cat([x, self.previous_norm(previous.detach())], dim=-1)
        return self.out(x)


class GeometricEnsemble(nn.Module):
    """Exit i's weighted geometric ensemble of heads 0..i: sum_j exp(w_j) log p_j + b.

    ZTW's form (a product of the head distributions raised to learned positive powers, times a
    learned class prior exp(b)); the softmax of the output is that renormalised product. The
    weights start at -log(members) (+ small noise) so the initial output is the mean of the
    log-probabilities, the starting point of the authors' code (which averages instead of sums).
    """

    def __init__(self, members: int, num_classes: int):
        super().__init__()
        self.weight = nn.Parameter(torch.full((members,), -math.log(members)) + 0.01 * torch.randn(members))
        self.bias = nn.Parameter(torch.zeros(num_classes))

    def forward(self, log_probs: Tensor) -> Tensor:
        """`log_probs` (B, members, C) -> ensemble logits (B, C)."""
        return (log_probs * self.weight.exp()[:, None]).sum(1) + self.bias


class ZTW(nn.Module):
    """A frozen timm VisionTransformer with cascading heads and geometric ensembles.

    Exits 0..depth-2 are the ensembles after blocks 0..depth-2; exit depth-1 is the backbone's
    own classifier. The backbone never trains: its parameters are frozen and it stays in eval
    mode whatever `train()` is called with (dropout, stochastic depth off).
    """

    def __init__(self, vit: nn.Module, head_hidden: int | None = None, head_layers: int = 3):
        super().__init__()
        depth, dim, classes = len(vit.blocks), vit.embed_dim, vit.num_classes
        hidden = dim if head_hidden is None else head_hidden
        self.vit = vit.requires_grad_(False).eval()
        self.heads = nn.ModuleList(
            CascadingHead(dim, classes, hidden, head_layers, cascading=i > 0) for i in range(depth - 1))
        self.ensembles = nn.ModuleList(GeometricEnsemble(i + 1, classes) for i in range(depth - 1))

    def train(self, mode: bool = True) -> ZTW:
        super().train(mode)
        self.vit.eval()
        return self

    def head_outputs(self, images: Tensor) -> tuple[list[Tensor], Tensor]:
        """(logits of every head, the backbone's final logits), all computed for every sample."""
        vit = self.vit
        x = vit.norm_pre(vit.patch_drop(vit._pos_embed(vit.patch_embed(images))))
        heads: list[Tensor] = []
        for block, head in zip(vit.blocks, self.heads):
            x = block(x)
            heads.append(head(x, heads[-1] if heads else None))
        x = vit.blocks[-1](x)
        return heads, vit.forward_head(vit.norm(x))

    def ensemble_outputs(self, heads: Sequence[Tensor]) -> list[Tensor]:
        """Exit i's ensemble logits from the heads' logits 0..i."""
        log_probs = torch.stack([h.log_softmax(-1) for h in heads], dim=1)
        return [ensemble(log_probs[:, : i + 1]) for i, ensemble in enumerate(self.ensembles)]

    def forward(self, images: Tensor) -> list[Tensor]:
        """Logits of every exit: the depth-1 ensembles, then the backbone's classifier."""
        heads, final = self.head_outputs(images)
        return self.ensemble_outputs(heads) + [final]


class ZTWHeadsModule(SupervisedModule):
    """Phase 1: train the cascading heads on the frozen backbone, CE summed over heads.

    Defaults are the authors' code (lr 1e-3, weight decay 5e-5; the code uses Adam, the base
    class AdamW). Accuracy is that of the deepest head; `acc_head<i>` logs every head.
    """

    def __init__(self, model: ZTW, lr: float = 1e-3, weight_decay: float = 5e-5, **optim):
        super().__init__(model, lr=lr, weight_decay=weight_decay, **optim)
        model.ensembles.requires_grad_(False)
        model.heads.requires_grad_(True)

    def loss_and_logits(self, batch):
        x, y = batch
        heads, _ = self.model.head_outputs(x)
        loss = torch.stack([F.cross_entropy(h, y) for h in heads]).sum()
        extra = {f"acc_head{i}": (h.argmax(-1) == y).float().mean() for i, h in enumerate(heads)}
        return loss, heads[-1], extra


class ZTWEnsembleModule(SupervisedModule):
    """Phase 2: train only the ensemble weights and biases (heads frozen), CE summed over exits.

    Defaults are the authors' code (lr 1e-3, no weight decay). Accuracy is the last ensemble's.
    """

    def __init__(self, model: ZTW, lr: float = 1e-3, weight_decay: float = 0.0, **optim):
        super().__init__(model, lr=lr, weight_decay=weight_decay, **optim)
        model.heads.requires_grad_(False)
        model.ensembles.requires_grad_(True)

    def loss_and_logits(self, batch):
        x, y = batch
        with torch.no_grad():
            heads, _ = self.model.head_outputs(x)
        outputs = self.model.ensemble_outputs(heads)
        loss = torch.stack([F.cross_entropy(o, y) for o in outputs]).sum()
        return loss, outputs[-1], {}


def exit_flops(model: ZTW, example: Tensor) -> list[float]:
    """FLOPs of one sample leaving at each exit (spec B.4), measured with `count_flops`.

    Exit i < depth-1 pays the stem, blocks 0..i, heads 0..i and ensembles 0..i (every earlier
    exit was evaluated and declined); the last exit pays the whole backbone and every head and
    ensemble.
    """
    report = count_flops(model, example[:1])
    depth = len(model.vit.blocks)
    blocks = [report.under(f"vit.blocks.{i}") for i in range(depth)]
    heads = [report.under(f"heads.{i}") + report.under(f"ensembles.{i}") for i in range(depth - 1)]
    tail = sum(report.under(f"vit.{name}") for name in ("norm", "fc_norm", "head"))
    stem = report.under("vit") - sum(blocks) - tail
    costs = [stem + sum(blocks[: i + 1]) + sum(heads[: i + 1]) for i in range(depth - 1)]
    return costs + [report.under("vit") + sum(heads)]


def first_confident_exit(confidence: Tensor, threshold: float) -> Tensor:
    """Index of the first exit whose max probability is > threshold; the last exit always accepts.

    `confidence` (N, E) -> (N,). Strict '>' as in the authors' code, so threshold 1 only leaves
    early on probabilities above 1 (never) and threshold 0 leaves at the first exit.
    """
    accept = confidence > threshold
    accept[:, -1] = True
    return accept.float().argmax(1)


@torch.no_grad()
def evaluate_thresholds(model: ZTW, loader: DataLoader, thresholds: Iterable[float]) -> list[dict[str, object]]:
    """One accuracy-vs-FLOPs row per confidence threshold, from a single pass over `loader`.

    Every exit is computed for every sample once; exits are then chosen per threshold, which gives
    the same predictions as stopping the computation at the exit. FLOPs of a sample are those of
    its exit (`exit_flops`), averaged over the set.
    """
    model.eval()
    device = next(model.parameters()).device
    confidence, correct, example = [], [], None
    for x, y in progress(loader, "eval ztw"):
        x, y = x.to(device), y.to(device)
        example = x[:1] if example is None else example
        probs = torch.stack(model(x), dim=1).softmax(-1)
        confidence.append(probs.max(-1).values)
        correct.append(probs.argmax(-1) == y[:, None])
    confidence, correct = torch.cat(confidence), torch.cat(correct)
    costs = torch.tensor(exit_flops(model, example), dtype=torch.float64, device=device)
    rows: list[dict[str, object]] = []
    for threshold in thresholds:
        exit_index = first_confident_exit(confidence, threshold)
        hit = correct[torch.arange(len(exit_index), device=device), exit_index]
        rows.append({"method": "ztw", "setting": f"thr={threshold:g}", "threshold": float(threshold),
                     "accuracy": float(hit.float().mean()), "flops": float(costs[exit_index].mean()),
                     "mean_exit": float(exit_index.float().mean())})
    return rows

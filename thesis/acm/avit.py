"""A-ViT baseline: adaptive token halting (Yin et al. 2022 [652]; thesis Sec. 3.1, Fig. 3.4; spec B.5).

Every token decides, block by block, when it has been processed enough (adaptive computation
time per token). After block l a token's halting score is h = sigmoid(gate_scale * t[0] -
gate_center), read from the token's first embedding channel, so no parameter is added (A-ViT).
Scores accumulate; a token stops when its cumulative score reaches 1 - eps, and from then on it is
left out of every later block: in training by masking (its key is hidden from the attention and
its state frozen; the fix of A-ViT issue #13, as in the ACM authors' code), at inference by
actually removing it from the sequence (`AViT.infer`). The token's output is the ACT mean field
of its states, sum_{l<N} h^l t^l + r t^N with remainder r = 1 - sum_{l<N} h^l (A-ViT
Algorithm 1). The class token (any prefix token) never halts, so the classifier always reads a
class token that ran every block and attended to the tokens still alive.

Losses (`AViTModule`): task CE + 5e-4 x ponder loss mean(N + r) over patch tokens (A-ViT's
ponder cost) + 1.0 x distribution prior: KL between a Gaussian (std 1) over halting depths
centred at the target depth and the batch-average halting-score distribution over blocks
(A-ViT). Weights, gate_scale 10, gate_center 75, eps 0.01 and target depths {4, 6, 8, 10} are
the ACM authors' code (spec B.5).

External / code facts, not in the thesis:
- A-ViT itself: parameter-free halting on channel 0, the eps = 0.01 threshold, the ponder cost
  N + r, the Gaussian distribution prior and the ACT mean-field output.
- The authors' code computes the per-block average halting score over all tokens of all
  samples (the fix of A-ViT issue #4, whose original sliced the batch instead of the tokens);
  here it is over the patch tokens, halted ones counting 0, since prefix tokens never halt.
- The authors' code's prior is `kl_div(log q, log p, reduction="batchmean")` on a 1-D tensor,
  i.e. KL(p || q) divided by the depth, with the target log p = Normal(target, 1).log_prob(1..L)
  not renormalised and q clamped to [1e-3, 0.999]; kept as is so the weight 1.0 means the same.
- In A-ViT's and the authors' code the class token halts like the others and the classifier reads
  its mean-field output; here (a choice of this project) it never halts. Consequence: as
  for patch tokens in the original, the task loss reaches no halting score (the masks are hard);
  halting is shaped by the ponder and prior losses while the network adapts to it.
- `init_halting_bias` is the code's start: the bias of channel 0 of each block's fc2 is set so
  that tokens begin halting in the second half of the network (without it, gate_center 75 gives
  h = sigmoid(-75), a zero gradient).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader

from thesis.core.evaluate import progress
from thesis.core.flops import count_flops
from thesis.core.modules import SupervisedModule

BlockRunner = Callable[[nn.Module, Tensor, Tensor], Tensor]


@dataclass
class HaltingState:
    """Per-token ACT bookkeeping, all (B, T) except `output` (B, T, D).

    `cumulative` = sum of halting scores so far, `remainder` = 1 - sum of the scores of the blocks
    before the current one, `rho` = ponder cost N + r (final once halted), `depth` = blocks run,
    `alive` = still running, `output` = mean-field output accumulated so far.
    """

    cumulative: Tensor
    remainder: Tensor
    rho: Tensor
    depth: Tensor
    alive: Tensor
    output: Tensor

    @classmethod
    def start(cls, x: Tensor) -> HaltingState:
        zeros = x.new_zeros(x.shape[:2])
        return cls(zeros, torch.ones_like(zeros), zeros, zeros, torch.ones_like(zeros, dtype=torch.bool),
                   torch.zeros_like(x))

    def step(self, x: Tensor, h: Tensor, eps: float, final: bool) -> None:
        """One block of A-ViT Algorithm 1 (lines 14-28), given the block's output x and scores h.

        Tokens already halted are untouched. A running token that reaches 1 - eps adds r x to its
        output and r to its ponder cost and halts; one that does not adds h x and lowers r by h.
        In the last block every running token halts (h := 1).
        """
        running = self.alive.to(x.dtype)
        h = (torch.ones_like(h) if final else h) * running
        self.cumulative = self.cumulative + h
        self.depth = self.depth + running
        reached = running * (self.cumulative >= 1 - eps).to(x.dtype)
        continuing = running - reached
        weight = reached * self.remainder + continuing * h
        self.output = self.output + weight.unsqueeze(-1) * x
        self.rho = self.rho + running + reached * self.remainder
        self.remainder = self.remainder - continuing * h
        self.alive = continuing.bool()


@dataclass
class AViTOutput:
    """Training forward: logits, per patch token ponder cost and depth (B, P), the per-block
    average halting score over patch tokens (L,), and the tokens entering every block (B, L)."""

    logits: Tensor
    rho: Tensor
    depth: Tensor
    mean_halting: Tensor
    tokens_per_block: Tensor


def masked_block(block: nn.Module, x: Tensor, alive: Tensor) -> Tensor:
    """Training path: run the block on the full sequence, halted tokens hidden as attention keys
    and their states kept unchanged (A-ViT issue #13: the original let halted tokens be attended)."""
    y = block(x, attn_mask=alive[:, None, None, :])
    return torch.where(alive.unsqueeze(-1), y, x)


def dropped_block(block: nn.Module, x: Tensor, alive: Tensor) -> Tensor:
    """Inference path: run the block on each sample's alive tokens only (they really are removed)."""
    out = x.clone()
    for b in range(x.shape[0]):
        keep = alive[b].nonzero().squeeze(1)
        out[b, keep] = block(x[b, keep].unsqueeze(0))[0]
    return out


def init_halting_bias(vit: nn.Module, gate_center: float) -> None:
    """The authors' start (spec: code): fc2 bias channel 0 of block l set to -gate_center/(l+1) in
    the first half and 10 gate_center/(l+1) in the second, so channel 0 of the residual stream
    falls, then rises past gate_center / gate_scale and tokens start halting mid-network."""
    depth = len(vit.blocks)
    with torch.no_grad():
        for l, block in enumerate(vit.blocks):
            scale = -1.0 if l < depth // 2 else 10.0
            block.mlp.fc2.bias[0] = scale * gate_center / (l + 1)


class AViT(nn.Module):
    """A timm VisionTransformer with A-ViT token halting (training: masks; `infer`: dropping)."""

    def __init__(self, vit: nn.Module, target_depth: float, gate_scale: float = 10.0, gate_center: float = 75.0,
                 eps: float = 0.01, init_bias: bool = True):
        super().__init__()
        self.vit = vit
        self.target_depth = target_depth
        self.gate_scale, self.gate_center, self.eps = gate_scale, gate_center, eps
        if init_bias:
            init_halting_bias(vit, gate_center)

    def halting_score(self, x: Tensor) -> Tensor:
        """h = sigmoid(gate_scale * t[..., 0] - gate_center) (A-ViT); prefix tokens get 0 (never halt)."""
        h = torch.sigmoid(self.gate_scale * x[..., 0] - self.gate_center)
        return torch.cat([torch.zeros_like(h[:, : self.vit.num_prefix_tokens]), h[:, self.vit.num_prefix_tokens:]], 1)

    def _halt(self, images: Tensor, run_block: BlockRunner) -> tuple[Tensor, HaltingState, Tensor, Tensor]:
        """Blocks with halting; returns (logits, final state, mean halting per block, tokens per block)."""
        vit, p = self.vit, self.vit.num_prefix_tokens
        x = vit.norm_pre(vit.patch_drop(vit._pos_embed(vit.patch_embed(images))))
        state = HaltingState.start(x)
        means, counts = [], []
        for l, block in enumerate(vit.blocks):
            counts.append(state.alive.sum(1))
            x = run_block(block, x, state.alive)
            h = self.halting_score(x)
            means.append((h * state.alive)[:, p:].mean())
            state.step(x, h, self.eps, final=l == len(vit.blocks) - 1)
        logits = vit.forward_head(vit.norm(state.output))
        return logits, state, torch.stack(means), torch.stack(counts, 1)

    def forward(self, images: Tensor) -> AViTOutput:
        """Training forward (masked attention, every token computed, differentiable statistics)."""
        logits, state, means, counts = self._halt(images, masked_block)
        p = self.vit.num_prefix_tokens
        return AViTOutput(logits, state.rho[:, p:], state.depth[:, p:], means, counts)

    @torch.no_grad()
    def infer(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Inference with halted tokens removed: (logits, tokens entering every block (B, L))."""
        logits, _, _, counts = self._halt(images, dropped_block)
        return logits, counts


def distribution_prior_loss(mean_halting: Tensor, target_depth: float) -> Tensor:
    """KL(p || q) / depth: p = Gaussian (std 1) over depths 1..L at the target, q = the normalised
    per-block average halting scores (A-ViT's distributional prior, in the authors' code's form)."""
    depth = mean_halting.shape[0]
    q = (mean_halting / mean_halting.sum().clamp_min(1e-12)).clamp(1e-3, 0.999)  # guard: no token scored
    steps = torch.arange(1, depth + 1, dtype=mean_halting.dtype, device=mean_halting.device)
    log_p = torch.distributions.Normal(float(target_depth), 1.0).log_prob(steps)
    return (log_p.exp() * (log_p - q.log())).sum() / depth


class AViTModule(SupervisedModule):
    """A-ViT training: CE + ponder_weight * mean(N + r) + prior_weight * distribution prior.

    Defaults are the authors' code (lr 1e-3, no weight decay; it also clips gradients at norm
    1.5, a Trainer setting). Logs the three terms and the mean number of blocks per patch token.
    """

    def __init__(self, model: AViT, lr: float = 1e-3, weight_decay: float = 0.0, ponder_weight: float = 5e-4,
                 prior_weight: float = 1.0, **optim):
        super().__init__(model, lr=lr, weight_decay=weight_decay, **optim)
        self.ponder_weight, self.prior_weight = ponder_weight, prior_weight

    def loss_and_logits(self, batch):
        x, y = batch
        out = self.model(x)
        task = F.cross_entropy(out.logits, y)
        ponder = out.rho.mean()
        prior = distribution_prior_loss(out.mean_halting, self.model.target_depth)
        loss = task + self.ponder_weight * ponder + self.prior_weight * prior
        extra = {"task_loss": task, "ponder_loss": ponder, "prior_loss": prior, "token_depth": out.depth.mean()}
        return loss, out.logits, extra


def block_flops(block: nn.Module, tokens: Tensor) -> Tensor:
    """FLOPs (multiply-add = 1) of a timm block on `tokens` tokens (spec B.4, analytic).

    Every linear layer costs in x out per token; the attention products QK^T and AV cost
    tokens^2 x heads x head_dim each. Norms, softmax and activations are free in this convention.
    """
    per_token = sum(m.in_features * m.out_features for m in block.modules() if isinstance(m, nn.Linear))
    width = block.attn.num_heads * block.attn.head_dim
    return per_token * tokens + 2 * width * tokens**2


@torch.no_grad()
def evaluate(model: AViT, loader: DataLoader) -> list[dict[str, object]]:
    """One row: test accuracy, mean FLOPs per sample with halted tokens dropped, and the mean
    number of blocks a patch token ran (`mean_depth`, to compare with the target depth).

    A sample's FLOPs = the constant part (patch embedding, classifier; counted once with
    `count_flops`) + for every block the analytic cost of the tokens that entered it.
    """
    model.eval()
    device = next(model.parameters()).device
    correct = seen = 0
    flops, depth, constant = 0.0, 0.0, None
    for x, y in progress(loader, f"eval avit depth={model.target_depth:g}"):
        x, y = x.to(device), y.to(device)
        if constant is None:
            report = count_flops(model.vit, x[:1])
            constant = report.total - report.under("blocks")
        logits, counts = model.infer(x)
        per_block = torch.stack([block_flops(b, counts[:, l].double()) for l, b in enumerate(model.vit.blocks)], 1)
        flops += float(per_block.sum()) + constant * len(y)
        patches = (counts - model.vit.num_prefix_tokens).double()
        depth += float((patches.sum(1) / patches[:, 0]).sum())
        correct += int((logits.argmax(-1) == y).sum())
        seen += len(y)
    return [{"method": "avit", "setting": f"depth={model.target_depth:g}", "target_depth": model.target_depth,
             "accuracy": correct / seen, "flops": flops / seen, "mean_depth": depth / seen}]

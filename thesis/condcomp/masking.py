"""Row masking and the three flavours of dynamic sparsity of Sec. 2.0.1 (eqs. 2.3-2.8)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from thesis.condcomp.record import ComputeRecord, record_from_mask

Selector = Callable[[Tensor], Tensor]


def mask_rows(s: Tensor, m: Tensor) -> Tensor:
    """Γ(S, x_c) = M ⊙ S (eq. 2.3): zero the rows (last-dim vectors) of `s` where `m` is 0.

    `s` has shape (..., n, d) and `m` shape (..., n); `m` may be boolean or a (straight-through)
    float mask, in which case gradients flow into it. Every output row is either 0 or the input row.
    """
    return s * m.to(s.dtype).unsqueeze(-1)


def _broadcast_to(m: Tensor, ref: Tensor) -> Tensor:
    """Append singleton dims to `m` so it broadcasts against `ref` from the left."""
    return m.reshape(m.shape + (1,) * (ref.dim() - m.dim()))


class InputSparse(nn.Module):
    """Dynamic input sparsity f(Γ(x, x_c), w) (eq. 2.4): f only sees the tokens the selector keeps.

    `selector(x_c)` returns a keep-mask of shape (B, N) for tokens x of shape (B, N, d).
    mode "masked": f runs on all tokens with dropped rows zeroed (eq. 2.3), the vectorised training
    form; mode "gathered": f runs only on the kept tokens (the inference form that saves compute).
    Dropped rows of the output are 0 ("the empty set is 0") in both modes, and the two modes agree
    on kept rows whenever f is token-wise (e.g. an MLP). Returns (y, per-token ComputeRecord).
    """

    def __init__(self, f: nn.Module, selector: Selector, mode: Literal["masked", "gathered"] = "masked"):
        super().__init__()
        if mode not in ("masked", "gathered"):
            raise ValueError(f"unknown mode {mode!r}")
        self.f = f
        self.selector = selector
        self.mode = mode

    def forward(self, x: Tensor, x_c: Tensor | None = None) -> tuple[Tensor, ComputeRecord]:
        mask = self.selector(x if x_c is None else x_c)
        if self.mode == "masked":
            y = mask_rows(self.f(mask_rows(x, mask)), mask)
        else:
            y = self._gathered(x, mask != 0)
        return y, record_from_mask(mask, unit="token")

    def _gathered(self, x: Tensor, keep: Tensor) -> Tensor:
        counts = keep.sum(1)
        if bool((counts == counts[0]).all()):
            # Same cardinality in every sample: one batched call on the (B, k, d) kept tokens.
            idx = keep.float().argsort(dim=1, descending=True, stable=True)[:, : int(counts[0])]
            kept = self.f(torch.gather(x, 1, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1])))
            y = kept.new_zeros(x.shape[:2] + kept.shape[2:])
            return y.scatter(1, idx.unsqueeze(-1).expand_as(kept), kept)
        rows = []  # ragged cardinalities: one call per sample (eq. 2.22 is not vectorisable).
        for xb, kb in zip(x, keep):
            kept = self.f(xb[kb].unsqueeze(0)).squeeze(0)
            yb = kept.new_zeros((xb.shape[0],) + kept.shape[1:])
            yb[kb] = kept
            rows.append(yb)
        return torch.stack(rows)


class WidthSparse(nn.Module):
    """Dynamic width sparsity (eqs. 2.5-2.6): ⊕(Γ({f_1(x, w_1), ..., f_m(x, w_m)})).

    `blocks` are the f_i; `aggregator` is ⊕: "concat" (e.g. conv output channels), "concat_proj"
    (attention heads: concatenation then `proj`) or "sum" (experts). `selector(x_c)` returns a mask
    of shape (*lead, m) whose leading dims match the leading dims of the block outputs (one decision
    per sample or per token). All blocks are evaluated and masked (training form, keeps STE
    gradients); the record gives the fraction of blocks a sparse implementation would execute.
    With an all-ones mask the output equals the dense f of eq. 2.5.
    """

    def __init__(self, blocks: Sequence[nn.Module], aggregator: Literal["concat", "concat_proj", "sum"],
                 selector: Selector, proj: nn.Module | None = None):
        super().__init__()
        if aggregator not in ("concat", "concat_proj", "sum"):
            raise ValueError(f"unknown aggregator {aggregator!r}")
        if (aggregator == "concat_proj") != (proj is not None):
            raise ValueError("`proj` is required by, and only by, the concat_proj aggregator")
        self.blocks = nn.ModuleList(blocks)
        self.aggregator = aggregator
        self.selector = selector
        self.proj = proj

    def dense(self, x: Tensor) -> Tensor:
        """The unconditioned layer f(x, w) of eq. 2.5 (every block active)."""
        return self._aggregate([f(x) for f in self.blocks])

    def forward(self, x: Tensor, x_c: Tensor | None = None) -> tuple[Tensor, ComputeRecord]:
        mask = self.selector(x if x_c is None else x_c)
        outs = []
        for i, f in enumerate(self.blocks):
            out = f(x)
            outs.append(out * _broadcast_to(mask[..., i].to(out.dtype), out))
        fraction = (mask.detach() != 0).float().mean(-1)
        unit = "sample" if fraction.dim() == 1 else "token"
        return self._aggregate(outs), ComputeRecord(fraction=fraction, unit=unit)

    def _aggregate(self, outs: list[Tensor]) -> Tensor:
        if self.aggregator == "sum":
            return torch.stack(outs).sum(0)
        cat = torch.cat(outs, dim=-1)
        return cat if self.proj is None else self.proj(cat)


class DepthSkip(nn.Module):
    """Dynamic depth sparsity (eqs. 2.7-2.8): σ(x_c) f(x, w) + (1 − σ(x_c)) x.

    `gate(x_c)` returns one σ per sample, shape (B,), in [0, 1] (soft, or hard with STE gradients).
    σ = 0 gives the identity, σ = 1 gives f. In eval mode f is run only on samples with σ ≠ 0, so a
    skipped layer costs nothing; in train mode f runs on every sample so gradients reach σ.
    Returns (y, per-sample ComputeRecord with 1 where f was needed).
    """

    def __init__(self, f: nn.Module, gate: Callable[[Tensor], Tensor]):
        super().__init__()
        self.f = f
        self.gate = gate

    def forward(self, x: Tensor, x_c: Tensor | None = None) -> tuple[Tensor, ComputeRecord]:
        sigma = self.gate(x if x_c is None else x_c)
        active = sigma.detach() != 0
        if self.training:
            fx = self.f(x)
        else:
            fx = x.clone()
            if bool(active.any()):
                fx[active] = self.f(x[active]).to(x.dtype)
        s = _broadcast_to(sigma.to(x.dtype), x)
        return s * fx + (1 - s) * x, ComputeRecord(fraction=active.float(), unit="sample")

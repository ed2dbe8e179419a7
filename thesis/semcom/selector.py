"""Budget-conditioned token selection (thesis Sec. 3.3, Alg. 1, eqs. 3.30-3.33).

A budget token b^0 = alpha * b_h + (1 - alpha) * b_l is appended after the patch tokens and
travels through the blocks. Before each adaptive block l, a gate model l_g scores every patch
token and a threshold model l_t reads the budget token; the mask
M^l_j = ReLU(l_g(h_j^{l-1}) - l_t(b^{l-1})) * M^{l-1}_j can only shrink, so a dropped token
stays dropped. The class and budget tokens are never masked. Training penalises the distance of
the mean mask from alpha beyond a margin epsilon (eq. 3.31) at the last adaptive block, B(s), and
at every adaptive block, R (eq. 3.32).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

MEAN_OVER = ("thesis", "patches")


class BudgetToken(nn.Module):
    """Two learned vectors b_l, b_h (low / high budget) mixed by alpha into one token per sample."""

    def __init__(self, dim: int, init_std: float = 0.02):
        super().__init__()
        self.low = nn.Parameter(torch.randn(dim) * init_std)
        self.high = nn.Parameter(torch.randn(dim) * init_std)

    def forward(self, alpha: Tensor) -> Tensor:
        """(B,) budgets -> (B, 1, dim) budget tokens."""
        a = alpha.reshape(-1, 1, 1).to(self.low.dtype)
        return a * self.high + (1 - a) * self.low


class TokenSelector(nn.Module):
    """Module S of Alg. 1: gate l_g per patch token, threshold l_t from the budget token."""

    def __init__(self, dim: int, init_gate_bias: float = 10.0, init_thr_bias: float = -10.0):
        super().__init__()
        self.gate = nn.Linear(dim, 1)
        self.threshold = nn.Linear(dim, 1)
        with torch.no_grad():
            self.gate.bias.normal_(init_gate_bias, 1.0)
            self.threshold.bias.normal_(init_thr_bias, 0.1)

    def forward(self, patches: Tensor, budget: Tensor, previous: Tensor) -> tuple[Tensor, Tensor]:
        """Patch tokens (B, n, d), budget token (B, d), previous mask (B, n) -> new mask (B, n) and
        the margin l_g - l_t before the ReLU (what `hard_penalty` differentiates through)."""
        threshold = torch.sigmoid(self.threshold(budget))            # (B, 1)
        gates = torch.sigmoid(self.gate(patches)).squeeze(-1)        # (B, n)
        margin = gates - threshold
        return torch.relu(margin) * previous, margin


def kept_indicator(mask: Tensor, delta: float = 0.0, through: Tensor | None = None) -> Tensor:
    """1[M > delta] (what inference keeps); with `through` its gradient is that of `through`
    (straight-through estimate)."""
    hard = (mask > delta).to(mask.dtype)
    return hard if through is None else hard + through - through.detach()


def mean_mask(mask: Tensor, mean_over: str = "thesis") -> Tensor:
    """Per-sample mean mask: over the n patch tokens plus the budget token (n + 1 entries, the
    thesis's M-bar) or over the patch tokens only (the authors' code)."""
    if mean_over == "thesis":
        return (mask.sum(-1) + 1.0) / (mask.shape[-1] + 1)
    if mean_over == "patches":
        return mask.mean(-1)
    raise ValueError(f"mean_over must be one of {MEAN_OVER}, got {mean_over!r}")


def budget_penalty(mask: Tensor, alpha: Tensor, epsilon: float, mean_over: str = "thesis") -> Tensor:
    """B(l) = ReLU(|M-bar^l - alpha| - epsilon), eq. 3.31, averaged over the batch."""
    return torch.relu((mean_mask(mask, mean_over) - alpha).abs() - epsilon).mean()


def selection_losses(masks: list[Tensor], alpha: Tensor, epsilon: float, mean_over: str = "thesis",
                     hard_penalty: bool = False, delta: float = 0.0,
                     margins: list[Tensor] | None = None) -> tuple[Tensor, Tensor]:
    """(B(s), R) of eq. 3.33 for the masks of the adaptive blocks 2..s (block 1 keeps everything).

    R = (1 / s) * sum_{l=2}^{s} B(l) (eq. 3.32), s = len(masks) + 1. `hard_penalty` (a proposal)
    applies the same penalty to the kept indicator 1[M > delta], so the budget can only be met by
    dropping tokens, not by shrinking every mask value; its gradient goes through the pre-ReLU
    margins l_g - l_t (when given, else through M), so a dropped token can come back.
    """
    if not masks:
        zero = alpha.new_zeros(())
        return zero, zero
    through = margins if margins is not None else masks
    measured = [kept_indicator(m, delta, t) if hard_penalty else m for m, t in zip(masks, through)]
    penalties = [budget_penalty(m, alpha, epsilon, mean_over) for m in measured]
    s = len(masks) + 1
    return penalties[-1], torch.stack(penalties).sum() / s

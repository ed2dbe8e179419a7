"""Per-layer compute budgets of ALaST (thesis eqs. 3.17-3.18) and the token counts they allow.

Every layer l carries a budget b_l in [0, 1], initialised to 1. After fine-tuning step i,

    b_l^i = clip(b_l^{i-1} + alpha * (Delta_l^i - Delta_l^{i-1}), 0, 1)        (3.18)

where Delta_l^i is the squared norm of the class-token update of layer l (3.17). Step i runs with
the budgets of step i-1 (causality); the first step only records Delta. While no budget touches
0, the rule has the closed form b_l^i = 1 - alpha * (max_{j<=i} Delta_l^j - Delta_l^i): a layer
loses budget by the amount its class-token update has fallen from its running peak.

Delta is a squared norm, so alpha = the fine-tuning learning rate (the thesis's choice) only moves
budgets at the residual-stream scale of pre-trained DeiT/ViT models. `delta_norm="initial"` divides
each layer's Delta by its first value, making alpha dimensionless (a proposal for small models).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

DELTA_NORMS = ("none", "initial")
KEEP_REFERENCES = ("current", "original")


class LayerBudgets(nn.Module):
    """The budget vector and what eq. 3.18 needs to update it; buffers, so checkpoints keep them."""

    def __init__(self, num_layers: int, budget_lr: float, delta_norm: str = "none"):
        super().__init__()
        if delta_norm not in DELTA_NORMS:
            raise ValueError(f"delta_norm must be one of {DELTA_NORMS}, got {delta_norm!r}")
        self.budget_lr = budget_lr
        self.delta_norm = delta_norm
        self.register_buffer("budget", torch.ones(num_layers))
        self.register_buffer("previous_delta", torch.zeros(num_layers))
        self.register_buffer("initial_delta", torch.ones(num_layers))
        self.register_buffer("observed", torch.zeros((), dtype=torch.long))

    def update(self, delta: Tensor) -> Tensor:
        """Apply eq. 3.18 with this step's per-layer deltas (L,); return the new budgets."""
        delta = delta.detach().float().to(self.budget.device)
        if self.delta_norm == "initial":
            if self.observed == 0:
                self.initial_delta.copy_(delta.clamp_min(torch.finfo(delta.dtype).tiny))
            delta = delta / self.initial_delta
        if self.observed > 0:
            self.budget.copy_((self.budget + self.budget_lr * (delta - self.previous_delta)).clamp(0.0, 1.0))
        self.previous_delta.copy_(delta)
        self.observed += 1
        return self.budget


def kept_tokens(fraction: float, current: int, original: int, reference: str = "current") -> int:
    """How many patch tokens a layer with keep `fraction` lets through (at least 1, at most `current`).

    `reference="current"`: a fraction of the tokens entering the layer (fractions compound from
    layer to layer, as the thesis's "b_l N of the input sequence" reads); `"original"`: a fraction of
    the image's patch count, capped by what is still there.
    """
    if reference not in KEEP_REFERENCES:
        raise ValueError(f"keep_reference must be one of {KEEP_REFERENCES}, got {reference!r}")
    base = current if reference == "current" else original
    return max(1, min(current, math.ceil(fraction * base - 1e-9)))

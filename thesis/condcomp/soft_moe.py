"""Soft routing: combine the experts' inputs (Soft MoE, eqs. 2.19-2.20) or weights (SMEAR, eq. 2.21).

Both keep a fixed compute budget that does not depend on the router's decisions, so they return
only their output (no ComputeRecord).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap


class SoftMoE(nn.Module):
    """Soft MoE over tokens x (B, N, dim): each expert processes soft combinations of tokens.

    Eq. 2.19: slot inputs are convex combinations of the tokens; eq. 2.20: each token's output is a
    convex combination of the slot outputs. With logits = x Φ (Φ: one learned vector per slot),
    dispatch = softmax over tokens for each slot and combine = softmax over slots for each token
    (external detail: Puigcerver et al. 2023 [476]). Each expert owns `slots_per_expert` slots and
    runs once per slot, whatever N is. With one expert and one slot, a single token (or identical
    tokens) gives exactly the plain layer f(x).
    """

    def __init__(self, experts: Sequence[nn.Module], dim: int, slots_per_expert: int = 1):
        super().__init__()
        self.experts = nn.ModuleList(experts)
        self.slots_per_expert = slots_per_expert
        self.slot_embeddings = nn.Parameter(torch.randn(dim, len(experts) * slots_per_expert) / dim**0.5)

    def weights(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(dispatch, combine), both (B, N, slots): dispatch columns and combine rows sum to one."""
        logits = x @ self.slot_embeddings
        return logits.softmax(dim=1), logits.softmax(dim=-1)

    def forward(self, x: Tensor) -> Tensor:
        dispatch, combine = self.weights(x)
        slots = dispatch.transpose(1, 2) @ x  # (B, slots, dim), eq. 2.19
        per_expert = slots.split(self.slots_per_expert, dim=1)
        outputs = torch.cat([f(s) for f, s in zip(self.experts, per_expert)], dim=1)
        return combine @ outputs  # eq. 2.20


class SMEAR(nn.Module):
    """Soft merging of experts' weights: f(x, Σ_i γ_i(x) w_i) (eq. 2.21, Muqeeth et al. [416]).

    `experts` share one architecture; the first is used as the template (its buffers are used as
    is). γ = softmax(router(x_c)) per sample, with x_c the token mean of x (B, N, dim), or x itself
    for (B, dim) inputs. Each sample runs one merged expert. With one expert it is the plain layer.
    """

    def __init__(self, experts: Sequence[nn.Module], dim: int):
        super().__init__()
        self.experts = nn.ModuleList(experts)
        self.router = nn.Linear(dim, len(experts))

    def gates(self, x: Tensor) -> Tensor:
        """Merging weights γ(x_c), shape (B, n), rows sum to one."""
        x_c = x if x.dim() == 2 else x.mean(dim=tuple(range(1, x.dim() - 1)))
        return self.router(x_c).softmax(-1)

    def forward(self, x: Tensor) -> Tensor:
        gamma = self.gates(x)
        names = [name for name, _ in self.experts[0].named_parameters()]
        stacked = [dict(e.named_parameters()) for e in self.experts]
        merged = {name: torch.einsum("bn,n...->b...", gamma, torch.stack([p[name] for p in stacked]))
                  for name in names}
        template = self.experts[0]

        def run_one(params: dict[str, Tensor], xb: Tensor) -> Tensor:
            return functional_call(template, params, (xb.unsqueeze(0),)).squeeze(0)

        return vmap(run_one)(merged, x)

"""SpARE step 3 (thesis Eqs. 5.2-5.4) and the dense representation-engineering baselines, as edits
`h -> h'` of the last-position residual stream (applied by `thesis.spare.hooks.edit`).

To steer towards memory, the context vector is removed and the memory vector added; towards context
the roles swap. `alpha_placement`: `outside` is Eq. 5.4 as printed,
h' = h + alpha (-W z^- + W z^+) with z^- = min(z, z_C), z^+ = max(z_M - z, 0); `inside` is the
authors' code, alpha folded in before clipping, z^- = min(z, alpha z_C), z^+ = max(alpha z_M - z, 0),
h' = h - W z^- + W z^+. The decoder bias cancels, so only W_dec is applied.
Modes (Fig. 5.4c ablations): full, input_independent (z^- = z_remove, z^+ = z_add), remove_only,
add_only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from thesis.spare.sae import SparseAutoencoder

DIRECTIONS = ("context", "memory")
MODES = ("full", "input_independent", "remove_only", "add_only")
PLACEMENTS = ("inside", "outside")


def spare_delta(z: torch.Tensor, z_remove: torch.Tensor, z_add: torch.Tensor, alpha: float, placement: str,
                mode: str) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(z^-, z^+, scale) so that h' = h + scale * W_dec^T (z^+ - z^-)."""
    if placement not in PLACEMENTS:
        raise ValueError(f"spare.alpha_placement={placement!r} is not one of {PLACEMENTS}")
    if mode not in MODES:
        raise ValueError(f"spare.mode={mode!r} is not one of {MODES}")
    inner = alpha if placement == "inside" else 1.0
    outer = 1.0 if placement == "inside" else alpha
    remove, add = inner * z_remove, inner * z_add
    if mode == "input_independent":
        z_minus, z_plus = remove.expand_as(z), add.expand_as(z)
    else:
        z_minus = torch.minimum(z, remove)
        z_plus = torch.clamp(add - z, min=0)
    if mode == "remove_only":
        z_plus = torch.zeros_like(z_plus)
    if mode == "add_only":
        z_minus = torch.zeros_like(z_minus)
    return z_minus, z_plus, outer


@dataclass
class SpareEdit:
    """One layer's SpARE edit: its SAE, the code it reads and the two functional vectors."""

    sae: SparseAutoencoder
    z_context: torch.Tensor
    z_memory: torch.Tensor
    direction: str
    alpha: float
    placement: str = "inside"
    mode: str = "full"
    code: str = "pre_topk_relu"

    def __call__(self, h: torch.Tensor) -> torch.Tensor:
        if self.direction not in DIRECTIONS:
            raise ValueError(f"direction {self.direction!r} is not one of {DIRECTIONS}")
        sae = self.sae
        with torch.no_grad():
            z = sae.code(h.to(sae.W_enc.device), self.code)
            remove, add = ((self.z_memory, self.z_context) if self.direction == "context"
                           else (self.z_context, self.z_memory))
            z_minus, z_plus, scale = spare_delta(z, remove.to(z.device), add.to(z.device), self.alpha,
                                                 self.placement, self.mode)
            return h + scale * sae.decode_directions(z_plus - z_minus).to(h.device, h.dtype)


@dataclass
class ActAddEdit:
    """ActAdd with mean activations: h' = h + alpha (mean_h_target - mean_h_other)."""

    mean_context: torch.Tensor
    mean_memory: torch.Tensor
    direction: str
    alpha: float

    def __call__(self, h: torch.Tensor) -> torch.Tensor:
        sign = 1.0 if self.direction == "context" else -1.0
        return h + sign * self.alpha * (self.mean_context - self.mean_memory).to(h.device, h.dtype)


@dataclass
class TaskVecEdit:
    """TaskVec: replace the residual stream with the mean activation of the target behaviour."""

    mean_context: torch.Tensor
    mean_memory: torch.Tensor
    direction: str

    def __call__(self, h: torch.Tensor) -> torch.Tensor:
        target = self.mean_context if self.direction == "context" else self.mean_memory
        return target.to(h.device, h.dtype).expand_as(h).clone()

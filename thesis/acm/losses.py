"""ACM training objectives (thesis eqs. 3.3-3.11), one function each.

Tensors follow the ACM's shapes: tokens (B, S, ...) with B samples of S tokens; `onehots` is the
list of per-ACM straight-through choice one-hots (B, S, C) and `learner_costs` the matching p^l.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor


def distillation_loss(prefixes: Tensor, target: Tensor) -> Tensor:
    """Eq. 3.3 for one ACM: mean over tokens and prefixes n of ||h(z, n) - o||^2.

    `prefixes` (..., N, d) from `ACM.forward_all`; `target` (..., d) the replaced module's output.
    Averaging this over the L ACMs gives the 1/(|B| S L N) normalisation of eq. 3.3.
    """
    return (prefixes - target.unsqueeze(-2)).pow(2).sum(-1).mean()


def gate_labels(distances: Tensor, tau: float = 1 / 1.2, min_choice: int = 0,
                label_offset: int = 0) -> Tensor:
    """Eq. 3.5: t = min{n in 2..N : d(n)/d(n-1) >= tau}, the first learner that stops helping.

    `distances` (..., N + 1) holds d(n) = ||h(z, n) - o|| for n = 0..N (n = 0 is the zero output).
    With min_choice = 0 the search starts at n = 1 (d(1)/d(0)); with 1 at n = 2 as printed. When no
    n qualifies the label is N (the official code's fallback; the thesis leaves it undefined).
    `label_offset = -1` gives the prose reading (the count *before* the non-improving learner),
    never below min_choice. Returns labels as numbers of learners.
    """
    n_max = distances.shape[-1] - 1
    ratios = distances[..., 1:] / distances[..., :-1].clamp_min(1e-12)  # entry n-1: d(n)/d(n-1)
    candidates = torch.arange(1, n_max + 1, device=distances.device)
    allowed = candidates >= max(min_choice + 1, 2 if min_choice == 1 else 1)
    stops = (ratios >= tau) & allowed
    first = torch.where(stops.any(-1), stops.float().argmax(-1) + 1, torch.full_like(stops[..., 0], n_max, dtype=torch.long))
    return (first + label_offset).clamp(min_choice, n_max)


def gate_pretraining_loss(logits: Tensor, labels: Tensor, min_choice: int) -> Tensor:
    """Eq. 3.6: cross-entropy between the gate's choice distribution and the labels."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), (labels - min_choice).reshape(-1))


def _learners_used(onehot: Tensor, min_choice: int) -> Tensor:
    """k per token as a differentiable function of the straight-through one-hot."""
    counts = torch.arange(onehot.shape[-1], device=onehot.device, dtype=onehot.dtype) + min_choice
    return (onehot * counts).sum(-1)


def compute_fraction(onehots: Sequence[Tensor], min_choices: Sequence[int], learner_costs: Sequence[float],
                     num_learners: Sequence[int]) -> Tensor:
    """Per-sample executed fraction of the ACMs' learner cost: sum_{j,l} k p^l / sum_{j,l} N p^l (B,)."""
    used = sum(_learners_used(o, m).sum(-1) * p for o, m, p in zip(onehots, min_choices, learner_costs))
    full = sum(o.shape[1] * n * p for o, n, p in zip(onehots, num_learners, learner_costs))
    return used / full


def budget_loss(fraction: Tensor, beta_target: float) -> Tensor:
    """Eq. 3.7: | batch mean of the per-sample compute fraction - beta_target |."""
    return (fraction.mean() - beta_target).abs()


def entropy_loss(onehots: Sequence[Tensor]) -> Tensor:
    """Eqs. 3.8-3.9: mean over samples and ACMs of the normalised negative entropy of each
    sample's choice histogram a (-1 for a uniform histogram, 0 for a single choice).

    Normalised by log of the number of choices of that ACM, so the bounds hold for every ACM.
    """
    terms = []
    for onehot in onehots:
        hist = onehot.sum(1)
        a = hist / hist.sum(-1, keepdim=True)
        terms.append((a * torch.log(a.clamp_min(1e-12))).sum(-1) / math.log(onehot.shape[-1]))
    return torch.stack(terms).mean()


def dispersion_loss(per_sample: Tensor, sign: Literal["code", "printed"] = "code", scale: float = 1.0) -> Tensor:
    """Eqs. 3.10-3.11: mean pairwise L1 distance between per-sample compute fractions b_i.

    As printed (+) adding it would shrink the spread; the text wants compute spread between easy
    and hard samples and the official code subtracts it, so `sign="code"` (default) returns
    -scale x mean |b_i - b_m|; the code's own scale is 2.
    """
    spread = (per_sample.unsqueeze(0) - per_sample.unsqueeze(1)).abs().mean()
    return scale * (-spread if sign == "code" else spread)


@dataclass
class ComputeObjective:
    """alpha_b L_b + alpha_e L_e + alpha_d L_d of eq. 3.12 (task-agnostic: added to any task loss).

    Called with the ACMs' choice one-hots and the per-sample compute fractions; returns the
    weighted sum and the terms to log.
    """

    beta_target: float
    alpha_b: float = 0.1
    alpha_e: float = 0.05
    alpha_d: float = 0.05
    dispersion_sign: Literal["code", "printed"] = "code"
    dispersion_scale: float = 1.0

    def __call__(self, onehots: Sequence[Tensor], fraction: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        l_b = budget_loss(fraction, self.beta_target)
        l_e = entropy_loss(onehots)
        l_d = dispersion_loss(fraction, self.dispersion_sign, self.dispersion_scale)
        total = self.alpha_b * l_b + self.alpha_e * l_e + self.alpha_d * l_d
        return total, {"compute": fraction.mean(), "budget_loss": l_b, "entropy_loss": l_e, "dispersion_loss": l_d}

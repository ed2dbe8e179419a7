"""SEA baseline of Table 5.1: spectral editing of activations (Qiu et al. 2024, arXiv 2405.09719).

From neutral activations paired row by row with positive (behaviour to keep) and negative
(behaviour to remove) activations of one layer, SEA forms the cross-covariances
Omega+ = H_0^T H_+ / n and Omega- = H_0^T H_- / n, takes their left singular vectors, keeps the
leading directions of Omega+ (P+ = U+_k U+_k^T) and removes the leading ones of Omega-
(P- = I - U-_k U-_k^T). At inference both projections are applied to the activation and the two
results are summed and rescaled to the activation's own L2 norm (the authors' `l2_norm` merge).
How many leading directions: the fewest whose squared singular values reach a share `keep_ratio`
(`remove_ratio`) of the total, or an explicit count `keep_k` (`remove_k`).

The non-linear variant `sqexp` works in the feature space phi(x) = exp(-x^2 / (2 l^2)), element-wise:
cross-covariances and projections of phi(h), then back with |x| = l sqrt(-2 log y) and the sign of
the input (the map is invertible only up to the sign). Thesis setup (5.1.9): positive = h_M,
negative = h_C, neutral = prompts with (E_M, M) demonstrations whatever they answered; steering to
context swaps positive and negative.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from thesis.core.errors import ConfigError

FEATURES = ("linear", "sqexp")
_TINY = 1e-300  # smallest feature value fed to the inverse map (float64)


def sqexp(x: torch.Tensor, length_scale: float) -> torch.Tensor:
    return torch.exp(-x.square() / (2 * length_scale ** 2))


def sqexp_inverse(y: torch.Tensor, sign: torch.Tensor, length_scale: float) -> torch.Tensor:
    """x with phi(x) = y and the given sign; y is clipped into (0, 1], the range of phi."""
    return sign * length_scale * torch.sqrt(-2 * torch.log(y.clamp(_TINY, 1.0)))


def n_leading(singular_values: torch.Tensor, ratio: float | None, count: int | None) -> int:
    """Leading directions: `count` if given, else the fewest whose s^2 reach `ratio` of the total."""
    if count is not None:
        if not 0 <= count <= len(singular_values):
            raise ConfigError(f"SEA direction count {count} is outside [0, {len(singular_values)}]")
        return int(count)
    if ratio is None or not 0 <= ratio <= 1:
        raise ConfigError(f"SEA explained-variance ratio {ratio!r} must be in [0, 1] (or give a count)")
    energy = singular_values.double().square()
    if ratio == 0 or energy.sum() == 0:
        return 0
    share = torch.cumsum(energy, 0) / energy.sum()
    return int(torch.searchsorted(share, torch.tensor(ratio - 1e-12, dtype=share.dtype)).item()) + 1


def leading_left_vectors(neutral: torch.Tensor, target: torch.Tensor, ratio: float | None,
                         count: int | None) -> torch.Tensor:
    """(d, k) leading left singular vectors of the cross-covariance neutral^T target / n."""
    if neutral.shape != target.shape or neutral.ndim != 2 or len(neutral) == 0:
        raise ValueError(f"SEA needs paired (n, d) matrices, got neutral {tuple(neutral.shape)} and "
                         f"target {tuple(target.shape)}")
    n, d = neutral.shape
    if n < d and (count is None or count <= n):
        # rank <= n: neutral^T = Q R, so the cross-covariance is Q (R target / n) and only an (n, d) SVD is needed
        Q, R = torch.linalg.qr(neutral.T)
        U_small, s, _ = torch.linalg.svd(R @ target / n, full_matrices=False)
        U = Q @ U_small
    else:
        U, s, _ = torch.linalg.svd(neutral.T @ target / n, full_matrices=True)
    return U[:, :n_leading(s, ratio, count)]


@dataclass
class SeaEdit:
    """h -> merge(P+ phi(h), P- phi(h)) at one layer (callable for `thesis.spare.hooks.edit`)."""

    keep_basis: torch.Tensor    # (d, k+) orthonormal: P+ = B B^T
    remove_basis: torch.Tensor  # (d, k-) orthonormal: P- = I - B B^T
    feature: str = "linear"
    length_scale: float = 1.0

    def keep(self, x: torch.Tensor) -> torch.Tensor:
        return (x @ self.keep_basis) @ self.keep_basis.T

    def remove(self, x: torch.Tensor) -> torch.Tensor:
        return x - (x @ self.remove_basis) @ self.remove_basis.T

    def __call__(self, h: torch.Tensor) -> torch.Tensor:
        x = h.to(self.keep_basis.device, torch.float64)
        if self.feature == "linear":
            merged = self.keep(x) + self.remove(x)
        else:
            f = sqexp(x, self.length_scale)
            sign = torch.where(x < 0, -1.0, 1.0).to(x.dtype)
            merged = (sqexp_inverse(self.keep(f), sign, self.length_scale)
                      + sqexp_inverse(self.remove(f), sign, self.length_scale))
        norm = merged.norm(dim=-1, keepdim=True)
        out = merged * x.norm(dim=-1, keepdim=True) / norm.clamp_min(1e-30)
        return out.to(h.device, h.dtype)


def fit_sea(neutral_pos: torch.Tensor, positive: torch.Tensor, neutral_neg: torch.Tensor, negative: torch.Tensor,
            feature: str = "linear", keep_ratio: float | None = 0.99, remove_ratio: float | None = 0.99,
            keep_k: int | None = None, remove_k: int | None = None,
            length_scale: float | None = None, device: torch.device | str | None = None) -> SeaEdit:
    """SEA edit from neutral rows paired with positive rows and with negative rows ((n, d) each),
    computed in float64 on `device` (default: where the activations are).

    `length_scale` (sqexp only): None = root mean square of all neutral activations."""
    if feature not in FEATURES:
        raise ConfigError(f"SEA feature={feature!r} is not one of {FEATURES}")
    mats = [m.detach().to(device or m.device, torch.float64) for m in (neutral_pos, positive, neutral_neg, negative)]
    scale = 1.0
    if feature == "sqexp":
        scale = length_scale or float(torch.cat([mats[0], mats[2]]).square().mean().sqrt())
        mats = [sqexp(m, scale) for m in mats]
    keep_basis = leading_left_vectors(mats[0], mats[1], keep_ratio, keep_k)
    remove_basis = leading_left_vectors(mats[2], mats[3], remove_ratio, remove_k)
    return SeaEdit(keep_basis, remove_basis, feature, scale)


def neutral_rows(n_rows: int, styles: list[str], neutral_style: str = "doo") -> np.ndarray:
    """For prompts laid out as (question, k, seed) blocks of `styles` (`runner.collection_prompts`),
    the row of the neutral-style prompt in each row's block."""
    if neutral_style not in styles:
        raise ConfigError(f"SEA needs neutral prompts: add {neutral_style!r} to method.collect.styles "
                          f"(now {list(styles)})")
    rows = np.arange(n_rows)
    return rows - rows % len(styles) + list(styles).index(neutral_style)


def fit_sea_direction(acts: torch.Tensor, label: np.ndarray, neutral: np.ndarray, direction: str,
                      **kwargs) -> SeaEdit:
    """SEA towards `direction` from collected rows: label 0 (memory) / 1 (context) are the positive /
    negative behaviours, each paired with the neutral prompt of its own block."""
    target = {"memory": 0, "context": 1}[direction]
    pos, neg = np.flatnonzero(label == target), np.flatnonzero(label == 1 - target)
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError(f"SEA needs rows of both behaviours, got {len(pos)} {direction} and {len(neg)} other; "
                         "collect more prompts or use spare.grouping=loglik")
    return fit_sea(acts[neutral[pos]], acts[pos], acts[neutral[neg]], acts[neg], **kwargs)

"""Differentiable discrete sampling: Gumbel-max, Gumbel-Softmax and straight-through (eqs. 2.11-2.12).

Gumbel noise g = -log(-log u), u ~ U(0, 1) (external: Gumbel 1954 / Jang et al. 2017). Every sampler
takes an optional torch.Generator so draws are reproducible.
"""

from __future__ import annotations

import torch
from torch import Tensor

_EPS = 1e-10


def sample_gumbel(shape: torch.Size | tuple[int, ...], generator: torch.Generator | None = None,
                  device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
    """I.i.d. standard Gumbel(0, 1) samples g_i used by eqs. 2.11-2.12."""
    u = torch.rand(shape, generator=generator, device=device, dtype=dtype)
    return -torch.log(-torch.log(u.clamp(_EPS, 1.0 - 1e-7)))


def _perturb(logits: Tensor, noise: bool, generator: torch.Generator | None) -> Tensor:
    if not noise:
        return logits
    return logits + sample_gumbel(logits.shape, generator, logits.device, logits.dtype)


def gumbel_argmax(logits: Tensor, noise: bool = True, generator: torch.Generator | None = None,
                  dim: int = -1) -> Tensor:
    """s = argmax_i {p_i + g_i} (eq. 2.11): an exact sample with P(s = i) = softmax(p)_i.

    With noise=False this is the greedy argmax. Returns integer indices (no gradient).
    """
    return _perturb(logits, noise, generator).argmax(dim=dim)


def _one_hot_like(index: Tensor, like: Tensor, dim: int) -> Tensor:
    return torch.zeros_like(like).scatter(dim, index, 1.0)


def straight_through(hard: Tensor, soft: Tensor) -> Tensor:
    """STE: forward value `hard`, backward gradient of `soft` (hard − sg(soft) + soft)."""
    return hard - soft.detach() + soft


def gumbel_softmax(logits: Tensor, tau: float = 1.0, hard: bool = False, noise: bool = True,
                   generator: torch.Generator | None = None, dim: int = -1) -> Tensor:
    """Relaxed sample s_i = softmax((p + g)/τ)_i (eq. 2.12); hard=True adds straight-through.

    With hard=True the forward value is the one-hot of eq. 2.11 (same noise) and the backward pass
    uses the gradient of the soft relaxation (Fig. 2.4).
    """
    soft = torch.softmax(_perturb(logits, noise, generator) / tau, dim=dim)
    if not hard:
        return soft
    return straight_through(_one_hot_like(soft.argmax(dim, keepdim=True), soft, dim), soft)


def topk_mask(scores: Tensor, k: int, dim: int = -1) -> Tensor:
    """Boolean mask with exactly k True entries along `dim`: the k highest scores (ties by index)."""
    idx = scores.topk(k, dim=dim).indices
    return torch.zeros_like(scores, dtype=torch.bool).scatter(dim, idx, True)


def gumbel_topk(logits: Tensor, k: int, tau: float = 1.0, noise: bool = True,
                generator: torch.Generator | None = None, dim: int = -1) -> Tensor:
    """k-hot straight-through sample of a k-subset (the top-k extension of eq. 2.11).

    Forward: exactly k ones at the top-k of p + g, i.e. a sample without replacement
    (external: Gumbel-top-k, Kool et al. 2019 [307]). Backward: gradient of the relaxed k-hot
    sum_{j<k} softmax(r_j / τ) with r_{j+1} = r_j + log(1 − softmax(r_j / τ)), r_0 = p + g, whose
    entries sum to k (external: relaxed subset sampling, Xie & Ermon 2019).
    """
    perturbed = _perturb(logits, noise, generator)
    hard = topk_mask(perturbed, k, dim).to(logits.dtype)
    soft = torch.zeros_like(perturbed)
    r = perturbed
    for _ in range(k):
        alpha = torch.softmax(r / tau, dim=dim)
        soft = soft + alpha
        r = r + torch.log((1.0 - alpha).clamp_min(_EPS))
    return straight_through(hard, soft)

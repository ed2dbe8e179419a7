"""Trainable scorer p(S, x) that gives one real score per element of a set (eqs. 2.9-2.10)."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class PooledDotScorer(nn.Module):
    """Scores |S| = n elements by v^T c_i with v = MLP(sum_ij x_ij) (eqs. 2.9-2.10).

    The thesis' example selects output channels of a conv layer from a sum-pooled feature map; here
    x is channels-last, (B, ..., d) (e.g. (B, h, w, d) or tokens (B, N, d)), and is sum-pooled over
    every dim between batch and channels. Each element i owns a trainable embedding c_i.
    Returns scores of shape (B, n), to be fed to a Gumbel sampler (eqs. 2.11-2.12).
    """

    def __init__(self, d: int, n: int, hidden: int = 64, embed_dim: int = 32):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, embed_dim))
        self.element_embeddings = nn.Parameter(torch.randn(n, embed_dim) / embed_dim**0.5)

    def forward(self, x: Tensor) -> Tensor:
        pooled = x.sum(dim=tuple(range(1, x.dim() - 1))) if x.dim() > 2 else x
        v = self.mlp(pooled)
        return v @ self.element_embeddings.T

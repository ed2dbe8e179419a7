"""Token selection (dynamic input): dropping, merging and monotone masks (eq. 2.22, Sec. 2.0.2).

X' = M X with M (n', n): one-hot rows select tokens (dropping); a binary M whose columns sum to one
pools tokens (merging). Batched training uses the masking form (eq. 2.3) with monotone masks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from thesis.condcomp.gumbel import topk_mask


def drop_matrix(idx: Tensor, n: int) -> Tensor:
    """M of eq. 2.22 for dropping: (B, n', n) with row j the one-hot of token idx[:, j]."""
    return F.one_hot(idx, n).float()


def token_drop(x: Tensor, idx: Tensor) -> Tensor:
    """X' = M X (eq. 2.22) with one-hot rows, computed as a gather: x (B, n, d), idx (B, n') -> (B, n', d)."""
    return torch.gather(x, 1, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def merge_matrix(assign: Tensor, n_out: int) -> Tensor:
    """M of eq. 2.22 for merging: (B, n_out, n) binary, M[j, t] = 1 iff token t goes to output j.

    Each column has exactly one 1 (every input token contributes to exactly one output token).
    """
    return F.one_hot(assign, n_out).float().transpose(-1, -2)


def token_merge(x: Tensor, assign: Tensor, n_out: int | None = None, mean: bool = False) -> Tensor:
    """Token merging X' = M X (eq. 2.22): output token j = sum of the input tokens assigned to j.

    `assign` (B, n) gives each token's output index. mean=True divides by the group size (a
    dynamic average pooling instead of the printed sum). The identity assignment returns x.
    """
    n_out = int(assign.max()) + 1 if n_out is None else n_out
    m = merge_matrix(assign, n_out).to(x.dtype)
    merged = m @ x
    if mean:
        merged = merged / m.sum(-1, keepdim=True).clamp_min(1.0)
    return merged


def topk_tokens(scores: Tensor, k: int) -> Tensor:
    """Indices (B, k) of the k highest-scoring tokens, in their original order (keeps positions sorted)."""
    return scores.topk(k, dim=-1).indices.sort(dim=-1).values


def monotone_mask(previous: Tensor, proposal: Tensor) -> Tensor:
    """Keep-mask of a later selector: previous ⊙ proposal (DynamicViT-style, Rao et al. 2021 [495]).

    A token dropped earlier stays dropped; float (STE) masks keep their gradients.
    """
    return previous * proposal


def select_within(previous: Tensor, scores: Tensor, k: int) -> Tensor:
    """Boolean mask of the k best-scoring tokens among those still kept in `previous` (B, n).

    Fixed-cardinality version of a monotone selector; needs k ≤ the number of kept tokens.
    """
    if bool((previous.sum(-1) < k).any()):
        raise ValueError("cannot keep more tokens than are still alive")
    return topk_mask(scores.masked_fill(~previous.bool(), float("-inf")), k)

"""Token Merging (ToMe, Bolya et al., ICLR 2023): the token-merging baseline of the ALaST tables.

The thesis compares ALaST with ToMe [66] (Tables 3.2-3.4, 3.8): full fine-tuning while every
block merges r tokens, so later blocks see fewer tokens and the step costs less. No ToMe code is
used here; the three steps of the paper's Sec. 3 are written out below, numbered as there:

1. bipartite soft matching (`bipartite_soft_matching`): the keys of the block's attention, averaged
   over heads, are the tokens' features; the sequence is split alternately into sets A (even
   positions) and B (odd positions); each A token is linked to its most similar B token (cosine
   similarity); the r links of highest similarity are kept; the class token is never merged;
2. merging (`merge_tokens`): each kept link folds its A token into its B token by a size-weighted
   average, x_merged = sum_i s_i x_i / sum_i s_i, and the sizes add up, s_merged = sum_i s_i
   (several A tokens may fold into the same B token);
3. proportional attention (`proportional_attention`): A = softmax(q k^T / sqrt(d) + log s), the
   log size of every key added to the logits, so that a token standing for s identical tokens
   draws the attention those s tokens would have drawn together.

Merging runs between attention and MLP (the paper's placement); the output keeps the surviving
tokens in their original order, prefix tokens first (ToMe concatenates unmerged A before B;
attention and MLP do not depend on the order, and this keeps the class token at position 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class TokenSizes:
    """The sizes s (B, N, 1) of a sequence's tokens: how many input tokens each one stands for
    (None: one each, nothing merged yet). Carried from block to block by `SelectiveViT`;
    `proportional` switches step 3 (proportional attention) on or off."""

    size: Tensor | None = None
    proportional: bool = True

    @property
    def attention_size(self) -> Tensor | None:
        """The sizes proportional attention should use, None where it is off or all sizes are 1."""
        return self.size if self.proportional else None


def proportional_attention(q: Tensor, k: Tensor, scale: float, size: Tensor | None = None) -> Tensor:
    """Step 3: softmax(q k^T * scale + log s) over the keys; q, k (B, heads, N, d), s (B, N, 1).

    With s = None (or all ones) this is plain scaled dot-product attention."""
    logits = (q * scale) @ k.transpose(-2, -1)
    if size is not None:
        logits = logits + size.log().transpose(1, 2).unsqueeze(1).to(logits.dtype)
    return logits.softmax(dim=-1)


def merge_count(r: int, num_tokens: int, num_prefix: int) -> int:
    """How many tokens a block can really merge: r, at most half of the non-prefix tokens."""
    return max(0, min(int(r), (num_tokens - num_prefix) // 2))


@torch.no_grad()
def bipartite_soft_matching(keys: Tensor, r: int, num_prefix: int = 1) -> tuple[Tensor, Tensor]:
    """Step 1: which r tokens to merge into which; keys (B, heads, N, d) of the block's attention.

    Features: keys averaged over heads, unit-normalised (dot product = cosine similarity).
    Set A: positions 0, 2, 4, ...; set B: positions 1, 3, 5, .... Every A token's best B match is
    found, the r A tokens with the most similar matches are merged into them. Prefix tokens (the
    class token) can neither be merged nor be merged into. Returns the sequence positions of the
    merged A tokens and of their B partners, both (B, r). No gradient: the matching is a discrete choice.
    """
    r = merge_count(r, keys.shape[2], num_prefix)
    features = keys.mean(dim=1)
    features = features / features.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(features.dtype).tiny)
    similarity = features[:, 0::2] @ features[:, 1::2].transpose(-2, -1)
    similarity[:, : (num_prefix + 1) // 2, :] = -torch.inf  # prefix tokens in A (even positions < num_prefix)
    similarity[:, :, : num_prefix // 2] = -torch.inf        # prefix tokens in B (odd positions < num_prefix)
    best, partner = similarity.max(dim=-1)
    merged_a = best.argsort(dim=-1, descending=True)[:, :r]
    return 2 * merged_a, 2 * partner.gather(1, merged_a) + 1


def merge_tokens(x: Tensor, size: Tensor | None, src: Tensor, dst: Tensor) -> tuple[Tensor, Tensor]:
    """Step 2: fold the tokens at positions `src` (B, r) into those at `dst` (B, r).

    x (B, N, C), size (B, N, 1) or None (all ones). Each destination becomes the size-weighted
    average of itself and the tokens folded into it, its size the sum of theirs; the src tokens
    leave. Returns x (B, N - r, C) and size (B, N - r, 1), survivors in their original order."""
    batch, n, width = x.shape
    size = torch.ones(batch, n, 1, dtype=x.dtype, device=x.device) if size is None else size
    r = src.shape[1]
    weighted = x * size
    total = weighted.scatter_add(1, dst.unsqueeze(-1).expand(-1, -1, width),
                                 weighted.gather(1, src.unsqueeze(-1).expand(-1, -1, width)))
    mass = size.scatter_add(1, dst.unsqueeze(-1), size.gather(1, src.unsqueeze(-1)))
    leaving = torch.zeros(batch, n, dtype=torch.long, device=x.device).scatter(1, src, 1)
    survivors = leaving.argsort(dim=1, stable=True)[:, : n - r]  # stable: original order kept
    x_out = (total / mass).gather(1, survivors.unsqueeze(-1).expand(-1, -1, width))
    return x_out, mass.gather(1, survivors.unsqueeze(-1))


def merge(x: Tensor, keys: Tensor, sizes: TokenSizes, r: int, num_prefix: int) -> Tensor:
    """Steps 1 and 2 on a block's residual stream x: matches on `keys`, merges r tokens of x and
    updates `sizes` in place. Returns x with r fewer tokens (fewer when the sequence is short)."""
    src, dst = bipartite_soft_matching(keys, r, num_prefix)
    if src.shape[1] == 0:
        return x
    x, sizes.size = merge_tokens(x, sizes.size, src, dst)
    return x

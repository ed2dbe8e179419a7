"""A cache layer whose KV heads hold different numbers of entries (head-wise budgets, spec C.1/E.13).

After a head-adaptive eviction (AdaKV) the heads of one layer keep different counts, so they no
longer fit one (batch, kv_heads, seq, head_dim) tensor. Padding every head to the longest would
give back part of the memory the eviction saved; masking evicted keys in place (as kvpress does)
gives back all of it. This layer stores only the kept entries:

- `keys`, `values`: (entries, head_dim), the kept pairs of every (batch, head) concatenated in
  (batch, head, position) order; `lengths`: (batch, kv_heads) entries per head. Memory is exactly
  sum(lengths) x head_dim x 2 x precision.
- At attention time `update` builds a *left-padded* dense view (batch, kv_heads, L, head_dim),
  L = max length, appends the new tokens at the right, re-packs the storage and returns the view.
  Left padding puts every head's newest entries in the same slots, so new tokens stay causal among
  themselves with one slot-based mask; `visible_slots` tells the press which slots are padding.
  The dense view lives only during the layer's own attention call.

`get_seq_length` is the slot length L, the coordinate system transformers builds masks in.
Beam search (`reorder_cache`), `crop` and offloading hooks of `DynamicLayer` are not supported.
"""

from __future__ import annotations

import torch
from torch import Tensor
from transformers.cache_utils import DynamicLayer


class HeadwiseLayer(DynamicLayer):
    """Kept KV pairs of one attention layer, a different count per (batch, KV head)."""

    def __init__(self, keys: Tensor, values: Tensor, lengths: Tensor):
        super().__init__()
        self.keys, self.values, self.lengths = keys, values, lengths
        self.device = keys.device
        self.is_initialized = True

    @classmethod
    def from_kept(cls, keys: Tensor, values: Tensor, keep: Tensor) -> HeadwiseLayer:
        """Keep the pairs where `keep` (batch, kv_heads, seq) is True, in positional order."""
        return cls(keys[keep], values[keep], keep.sum(-1))

    def visible_slots(self) -> Tensor:
        """(batch, kv_heads, L) bool: True where a slot of the dense view holds a real entry."""
        slots = torch.arange(self.get_seq_length(), device=self.lengths.device)
        return slots >= (self.get_seq_length() - self.lengths)[..., None]

    def dense(self) -> tuple[Tensor, Tensor]:
        """Left-padded (batch, kv_heads, L, head_dim) keys and values (zeros in padding slots)."""
        visible = self.visible_slots()
        shape = (*visible.shape, self.keys.shape[-1])
        keys, values = self.keys.new_zeros(shape), self.values.new_zeros(shape)
        keys[visible], values[visible] = self.keys, self.values
        return keys, values

    def update(self, key_states: Tensor, value_states: Tensor, *args, **kwargs) -> tuple[Tensor, Tensor]:
        """Append the new tokens to every head; return the dense view the attention reads."""
        visible = torch.cat([self.visible_slots(), self.lengths.new_ones(key_states.shape[:3], dtype=torch.bool)],
                            dim=-1)
        keys, values = self.dense()
        keys, values = torch.cat([keys, key_states], dim=-2), torch.cat([values, value_states], dim=-2)
        self.keys, self.values = keys[visible], values[visible]
        self.lengths = self.lengths + key_states.shape[-2]
        return keys, values

    def get_seq_length(self) -> int:
        return int(self.lengths.max()) if self.lengths.numel() else 0

    def entries(self) -> int:
        """KV pairs stored, summed over batch and heads."""
        return int(self.lengths.sum())

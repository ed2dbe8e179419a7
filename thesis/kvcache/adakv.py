"""AdaKV head-wise budgets (spec C.1, C.2, E.13): the heads of a layer share one budget, so heads whose
scores are high keep more pairs, and each head keeps at least a floor.

For a layer with H KV heads, n cached pairs and n_kept = the inner press's kept count per head,
the layer keeps B = H x n_kept pairs per batch item: first the `floor(alpha x n_kept)` best pairs of
every head (alpha = `alpha_safeguard`, 0.20 in kvpress's registry), then the best remaining scores
over all heads together until B is reached. Scores are compared across heads as they come, which
suits normalised scores (Expected Attention, attention-based scorers).

Unlike kvpress, which keeps every pair and hides the evicted keys at attention time, the evicted
pairs are removed: the layer's cache becomes a `HeadwiseLayer` storing exactly B pairs per batch
item, so memory shrinks by the requested ratio. Layers the inner press skips are left as they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from transformers.cache_utils import CacheLayerMixin

from thesis.kvcache.headwise_cache import HeadwiseLayer
from thesis.kvcache.press import Press, PressBase


def headwise_keep(scores: Tensor, per_head: int, alpha_safeguard: float) -> Tensor:
    """(batch, heads, seq) bool of the kept pairs: per-head floor, then global top-k over heads."""
    batch, heads, n = scores.shape
    floor = int(alpha_safeguard * per_head)
    boosted = scores.float().clone()
    if floor:
        boosted.scatter_(-1, scores.topk(floor, dim=-1).indices, float("inf"))
    chosen = boosted.reshape(batch, heads * n).topk(heads * per_head, dim=-1).indices
    keep = torch.zeros(batch, heads * n, dtype=torch.bool, device=scores.device)
    return keep.scatter_(-1, chosen, True).view(batch, heads, n)


@dataclass
class AdaKVPress(PressBase):
    """Head-adaptive eviction around a scoring press."""

    press: Press
    alpha_safeguard: float = 0.20

    def __post_init__(self) -> None:
        if not isinstance(self.press, Press):
            raise ValueError(f"AdaKVPress wraps a scoring Press; got {type(self.press).__name__}.")
        if not 0 <= self.alpha_safeguard <= 1:
            raise ValueError(f"alpha_safeguard is a fraction in [0, 1]; got {self.alpha_safeguard}.")

    @property
    def compression_ratio(self) -> float:
        return self.press.compression_ratio

    def attach(self, model: nn.Module) -> None:
        self.press.attach(model)

    def compress_layer(self, module: nn.Module, hidden_states: Tensor, layer: CacheLayerMixin,
                       attentions: Tensor | None, kwargs: dict[str, Any]) -> CacheLayerMixin:
        if isinstance(layer, HeadwiseLayer):
            raise ValueError("AdaKVPress cannot compress a head-wise cache twice; use it once, last.")
        keys, values = layer.keys, layer.values
        per_head = self.press.n_kept(keys.shape[-2])
        if per_head == keys.shape[-2] or not self.press.compresses_layer(module.layer_idx):
            return layer
        scores = self.press.score(module, hidden_states, keys, values, attentions, kwargs)
        return HeadwiseLayer.from_kept(keys, values, headwise_keep(scores, per_head, self.alpha_safeguard))

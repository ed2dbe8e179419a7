"""Baseline presses of Chapter 4 (spec D.1): random, StreamingLLM, KeyDiff, SnapKV, TOVA, observed attention.

Each scorer returns (batch, kv_heads, seq), higher = keep; protected positions get the layer's
maximum score + 1 so top-k always keeps them.

- Random: uniform scores, from a generator seeded once per `with press(model)` when `seed` is set;
  `skip_layers` leaves layers whole, as the KNorm authors' random baseline does for layers 0 and 1
  (so KNorm and random hold the same memory at the same ratio).
- StreamingLLM [623]: keep the first `n_sink` positions (attention sinks) and the most recent ones;
  the keys are not re-rotated (the original method also re-rotates them).
- KeyDiff: keys that point away from the head's average direction carry distinct information, so
  the score is minus the cosine between each key and the mean of the head's unit keys (no queries,
  no attention weights: it works with any attention kernel and in decoding).
- SnapKV [348]: attention paid by the last `window` queries, averaged over them, smoothed by an
  average pool of width `kernel` along positions, averaged over the query heads of each KV head;
  the window itself is protected. The pool divides by `kernel` at the edges too (zero padding
  counted), as the SnapKV authors' code and kvpress do; `pool_counts_padding=False` averages only
  the positions inside the range.
- TOVA: attention of the last query, averaged over all query heads (one score shared by every KV
  head); the last position is protected.
- Observed attention (H2O-like): attention received by position t averaged over the queries that
  can see it, S_t = 1/(n - t) sum_{i >= t} A_it (spec 0, 0-based t), averaged over each group.

Attention weights are the layer's own with eager attention; otherwise they are recomputed from the
layer input (`thesis.kvcache.queries`), which for observed attention costs a (heads, n, n) matrix.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from thesis.kvcache.press import Press
from thesis.kvcache.queries import group_mean, window_attention


def protect(scores: Tensor, positions: slice) -> Tensor:
    """Scores with `positions` raised above every other score."""
    scores = scores.clone()
    scores[..., positions] = scores.max() + 1
    return scores


def attention_of_last(module: nn.Module, hidden_states: Tensor, keys: Tensor, attentions: Tensor | None,
                      kwargs: dict[str, Any], window: int) -> Tensor:
    """(batch, heads, window, seq) attention weights of the last `window` queries.

    Needs one cached key per input position, i.e. the cache as prefill left it (first in a
    `ComposedPress`).
    """
    if keys.shape[-2] != hidden_states.shape[1]:
        raise ValueError("Attention-based scorers need the uncompressed prefill cache; "
                         "put them first in ComposedPress.")
    if attentions is not None:
        return attentions[:, :, -window:].float()
    return window_attention(module, hidden_states, keys, kwargs["position_embeddings"], window)


@dataclass
class RandomPress(Press):
    """Evict uniformly at random in every layer not in `skip_layers`."""

    seed: int | None = None
    skip_layers: tuple[int, ...] = ()
    generator: torch.Generator | None = field(default=None, init=False, repr=False)

    def compresses_layer(self, layer_idx: int) -> bool:
        return layer_idx not in self.skip_layers

    def attach(self, model: nn.Module) -> None:
        self.generator = None if self.seed is None else torch.Generator().manual_seed(self.seed)

    def score(self, module: nn.Module, hidden_states: Tensor, keys: Tensor, values: Tensor,
              attentions: Tensor | None, kwargs: dict[str, Any]) -> Tensor:
        return torch.rand(keys.shape[:3], generator=self.generator).to(keys.device)


@dataclass
class StreamingLLMPress(Press):
    """Keep `n_sink` first positions and the most recent ones."""

    n_sink: int = 4

    def score(self, module: nn.Module, hidden_states: Tensor, keys: Tensor, values: Tensor,
              attentions: Tensor | None, kwargs: dict[str, Any]) -> Tensor:
        n = keys.shape[-2]
        kept = self.n_kept(n)
        if kept < self.n_sink:
            raise ValueError(f"StreamingLLM keeps {kept} of {n} pairs, fewer than its {self.n_sink} sinks.")
        scores = keys.new_ones(keys.shape[:3], dtype=torch.float32)
        scores[..., self.n_sink:self.n_sink + n - kept] = 0
        return scores


@dataclass
class KeyDiffPress(Press):
    """Evict the keys most similar to the head's mean unit key."""

    def score(self, module: nn.Module, hidden_states: Tensor, keys: Tensor, values: Tensor,
              attentions: Tensor | None, kwargs: dict[str, Any]) -> Tensor:
        keys = keys.float()
        anchor = F.normalize(keys, dim=-1).mean(dim=-2, keepdim=True)
        return -F.cosine_similarity(keys, anchor, dim=-1)


@dataclass
class SnapKVPress(Press):
    """Attention from an observation window of the last queries, pooled along positions."""

    window: int = 64
    kernel: int = 5
    pool_counts_padding: bool = True

    def score(self, module: nn.Module, hidden_states: Tensor, keys: Tensor, values: Tensor,
              attentions: Tensor | None, kwargs: dict[str, Any]) -> Tensor:
        n = keys.shape[-2]
        if n <= self.window:
            raise ValueError(f"SnapKV needs more than window={self.window} cached pairs; got {n}.")
        weights = attention_of_last(module, hidden_states, keys, attentions, kwargs, self.window)
        observed = weights[..., : n - self.window].mean(dim=-2)
        pooled = F.avg_pool1d(observed, self.kernel, stride=1, padding=self.kernel // 2,
                              count_include_pad=self.pool_counts_padding)
        scores = F.pad(group_mean(pooled, module.num_key_value_groups), (0, self.window))
        return protect(scores, slice(n - self.window, n))


@dataclass
class TOVAPress(Press):
    """Attention of the last query, averaged over all heads."""

    def score(self, module: nn.Module, hidden_states: Tensor, keys: Tensor, values: Tensor,
              attentions: Tensor | None, kwargs: dict[str, Any]) -> Tensor:
        weights = attention_of_last(module, hidden_states, keys, attentions, kwargs, 1)[:, :, 0]
        scores = weights.mean(dim=1, keepdim=True).expand(-1, keys.shape[1], -1)
        return protect(scores, slice(-1, None))


@dataclass
class ObservedAttentionPress(Press):
    """Average attention received from the queries that can see the position (H2O-like)."""

    def score(self, module: nn.Module, hidden_states: Tensor, keys: Tensor, values: Tensor,
              attentions: Tensor | None, kwargs: dict[str, Any]) -> Tensor:
        n = keys.shape[-2]
        weights = attention_of_last(module, hidden_states, keys, attentions, kwargs, n)
        received = weights.sum(dim=-2) / torch.arange(n, 0, -1, device=keys.device)
        return group_mean(received, module.num_key_value_groups)

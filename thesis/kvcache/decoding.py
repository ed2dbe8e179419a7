"""Compression during decoding (spec 0 "streaming / decoding compression", D.1, E.3, E.14): every
layer's cache is brought back to a budget every few new tokens, not only once after prefill.

The presses of `press.py` compress the prompt once. Long generations (thesis 4.3: AIME25, MATH-500,
Table 4.4, Fig. 4.44) and memory-bounded language modelling (4.1 and 4.2 LM, a cache of 512 pairs)
instead hold the cache near a budget while tokens are added. `DecodingPress` wraps a scoring press
and, in every layer, once `compression_interval` tokens were added since the layer's last compression
(or since prefill), keeps the `target_size` pairs of each KV head that the wrapped press scores
highest, when the layer holds more. Between compressions a layer grows, so it holds at most
target_size + compression_interval pairs once the prompt fits the budget; the prompt is left whole
unless `compress_prefill` (kvpress's decoding press and the thesis's decoding runs leave it whole).
Thesis 4.3: interval 512, buffer 128; kvpress defaults: interval 512, target 2048, buffer 256.

Scoring. The wrapped press sees the layer's whole cache and, as hidden states, that layer's last
`hidden_states_buffer_size` inputs (prompt included): once the cache is compressed there is no longer
one cached key per input, so the recent inputs stand for the queries to come (Expected Attention's
statistics, eq. 4.12). At a prefill compression it sees the whole prompt, as in the prefill regime.
It is asked to keep target_size of n pairs, i.e. ratio 1 - target_size / n (scores that depend on
the ratio, StreamingLLM's, need it); its own `compression_ratio` is not used. Layers it skips
(`compresses_layer`, KNorm's layers 0 and 1) are never compressed. Kept pairs stay in positional
order (E.3), so slot-based rules (the sinks of StreamingLLM and Expected Attention, StreamingLLM's
recent window) still find the earliest positions first after any number of compressions.

Positions. New tokens get absolute positions from the press layer's token count (`tokens_seen`), not
from the shrinking cache, and each layer its own mask (press.py). Expected Attention averages RoPE from
the absolute next position, read from the current call's `position_ids` (eq. 4.13, E.14; kvpress
starts at the buffer length); like kvpress, it leaves the first `n_sink` rows of the hidden states it
gets out of its statistics, here the oldest buffered ones.

Refused: attention-based scorers (SnapKV, TOVA, observed attention: they need one query per cached
key), wrappers (`ComposedPress`, `AdaKVPress`), and head-wise caches (`HeadwiseLayer`, left by
AdaKVPress), whose heads hold different lengths that a scoring press cannot rank together.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from transformers.cache_utils import Cache, CacheLayerMixin

from thesis.kvcache.baselines import ObservedAttentionPress, SnapKVPress, TOVAPress
from thesis.kvcache.headwise_cache import HeadwiseLayer
from thesis.kvcache.press import Press, PressBase, _cache_argument

ATTENTION_SCORERS = (SnapKVPress, TOVAPress, ObservedAttentionPress)


@contextmanager
def keeping(press: Press, kept: int, n: int) -> Iterator[Press]:
    """The press set to keep `kept` of `n` pairs per KV head; its own ratio is restored after."""
    ratio = press.compression_ratio
    press.compression_ratio = 1 - kept / n
    try:
        if press.n_kept(n) != kept:
            raise RuntimeError(f"{type(press).__name__} would keep {press.n_kept(n)} of {n} pairs, not {kept}.")
        yield press
    finally:
        press.compression_ratio = ratio


@dataclass
class LayerState:
    """What one layer of one cache needs between calls: its recent inputs and the tokens added since
    its last compression."""

    hidden_states: Tensor  # (batch, <= hidden_states_buffer_size, hidden)
    since_compression: int


@dataclass
class DecodingPress(PressBase):
    """Keep every layer's cache at `target_size` pairs per KV head, every `compression_interval` tokens."""

    press: Press
    compression_interval: int = 512
    target_size: int = 2048
    hidden_states_buffer_size: int = 128
    compress_prefill: bool = False
    states: weakref.WeakKeyDictionary[Cache, dict[int, LayerState]] = field(
        default_factory=weakref.WeakKeyDictionary, init=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.press, Press):
            raise ValueError(f"DecodingPress wraps a scoring Press; got {type(self.press).__name__} "
                             "(wrappers such as AdaKVPress and ComposedPress are not supported during decoding).")
        if isinstance(self.press, ATTENTION_SCORERS):
            raise ValueError(f"{type(self.press).__name__} scores the prefill cache with its own queries and cannot "
                             "re-score a compressed cache; during decoding use KNorm, Q-Filters, StreamingLLM, "
                             "Random or Expected Attention.")
        for name in ("compression_interval", "target_size", "hidden_states_buffer_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer; got {value!r}.")

    def attach(self, model: nn.Module) -> None:
        self.press.attach(model)

    def compress_layer(self, module: nn.Module, hidden_states: Tensor, layer: CacheLayerMixin,
                       attentions: Tensor | None, kwargs: dict[str, Any]) -> CacheLayerMixin:
        """Keep the `target_size` best-scored pairs of each KV head when the layer holds more."""
        n = layer.get_seq_length()
        if n <= self.target_size:
            return layer
        with keeping(self.press, self.target_size, n) as press:
            layer.keys, layer.values = press.compress(module, hidden_states, layer.keys, layer.values, None, kwargs)
        return layer

    def _compress_after_prefill(self, module: nn.Module, args: tuple, kwargs: dict[str, Any], output: Any) -> None:
        """The hook `PressBase` runs after every attention call; here it serves prefill and decoding
        alike: buffer the layer's input, count the new tokens, compress when the interval is reached."""
        cache = _cache_argument(kwargs)
        if cache is None:
            return
        layer = cache.layers[module.layer_idx]
        if isinstance(layer, HeadwiseLayer):
            raise ValueError("DecodingPress cannot re-compress a head-wise (AdaKV) cache, whose heads hold different "
                             "lengths; prefill without AdaKVPress, or decode without DecodingPress.")
        hidden_states = kwargs["hidden_states"]
        new_tokens = hidden_states.shape[1]
        prefill = layer.get_seq_length() == new_tokens  # the layer held nothing before this call
        states = self.states.setdefault(cache, {})
        state = states.get(module.layer_idx)
        recent = hidden_states[:, -self.hidden_states_buffer_size:].detach()
        if state is None or prefill:
            state = states[module.layer_idx] = LayerState(recent.clone(), 0 if prefill else new_tokens)
        else:
            buffered = torch.cat([state.hidden_states, recent], dim=1)
            state.hidden_states = buffered[:, -self.hidden_states_buffer_size:]
            state.since_compression += new_tokens
        if prefill and not self.compress_prefill:
            return
        if prefill or state.since_compression >= self.compression_interval:
            state.since_compression = 0
            scored_on = hidden_states if prefill else state.hidden_states
            with torch.no_grad():
                cache.layers[module.layer_idx] = self.compress_layer(module, scored_on, layer, None, kwargs)

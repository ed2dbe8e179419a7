"""The press layer of Chapter 4: evict KV pairs of every attention layer right after prefill.

A press is a dataclass holding the compression ratio r, the fraction of KV pairs *removed*
(spec 0), and one method, `score`, giving one number per (batch, KV head, position); higher means
keep. `compress` keeps the n_kept best pairs of every KV head, in positional order (spec E.3: a
position-based scorer applied again must see the cache in order), and the cache's tensors of that
layer are replaced by the shorter ones, so memory really shrinks. `with press(model): ...` adds
forward hooks to every attention layer and removes them on exit; wrappers (`AdaKVPress`,
`ComposedPress`) reuse the same hooks through `compress_layer`.

Kept count per (layer, KV head) for n cached pairs: `floor` (default, kvpress) keeps
max(1, floor(n (1 - r))); `ceil` (the KNorm authors' code) keeps max(1, ceil(n (1 - r))); both
with a 1e-9 tolerance so that e.g. 100 x (1 - 0.7) counts as 30.

What this relies on in transformers 5.x (read in 5.24: `cache_utils.py`, `masking_utils.py`,
`models/llama/modeling_llama.py`, `generation/utils.py`):
- `DynamicCache.layers[i]` is a `DynamicLayer` whose `keys` and `values` attributes are tensors
  (batch, kv_heads, seq, head_dim), keys stored after RoPE, grown by concatenation in `update`;
  `get_seq_length()` reads `keys.shape[-2]`. Assigning shorter tensors is all eviction needs; a
  layer may also be replaced in `cache.layers` by another `DynamicLayer` subclass
  (`HeadwiseLayer`).
- Decoder layers live in `model.model.layers`, each with `self_attn` (`layer_idx`, `q_proj`,
  `o_proj`, `head_dim`, `num_key_value_groups`, `scaling`, `q_norm` on Qwen3), called with keyword
  arguments `hidden_states`, `position_embeddings` (cos, sin), `attention_mask`, `position_ids`,
  `cache`, and returning (output, attention weights or None; weights only with eager attention).
  `model.model.rotary_emb(x, position_ids)` gives (cos, sin) for any positions.
- With a cache, transformers builds the mask once, in the cache-slot coordinates of the first
  layer, and infers missing `position_ids` from that layer's stored length. Both break once layers
  hold fewer (or differently many) entries than tokens seen. Hence, while a press is active:
  (i) each attention layer that already holds entries gets its own mask, built from its own stored
  length (and padding, for `HeadwiseLayer`); (ii) calls without `position_ids` get absolute
  positions counted by the press (spec 0: new tokens keep their absolute positions; `tokens_seen`
  gives the next one). `generate` passes absolute positions itself. Outside a press context the
  caller must pass `position_ids` to continue from a compressed cache. Padded batches (a 2D mask
  with zeros) are refused, and only the eager and sdpa attention implementations accept the
  per-layer masks.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn
from transformers.cache_utils import Cache, CacheLayerMixin

from thesis.kvcache.headwise_cache import HeadwiseLayer

SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3", "gemma")
SUPPORTED_ATTENTION = ("eager", "sdpa")


def decoder(model: nn.Module) -> nn.Module:
    """The decoder stack (`layers`, `rotary_emb`) of a supported causal LM or base model."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ValueError(f"KV presses support model types {', '.join(SUPPORTED_MODEL_TYPES)}; got {model_type!r}.")
    attention = model.config._attn_implementation
    if attention not in SUPPORTED_ATTENTION:
        raise ValueError(f"KV presses need attn_implementation in {SUPPORTED_ATTENTION} (per-layer masks); "
                         f"got {attention!r}. Load the model with attn_implementation='sdpa'.")
    return model.model if hasattr(model, "lm_head") else model


def n_kept(n: int, compression_ratio: float, rounding: Literal["floor", "ceil"] = "floor") -> int:
    """Pairs kept out of n at ratio r (module docstring)."""
    keep = n * (1 - compression_ratio)
    return max(1, math.floor(keep + 1e-9) if rounding == "floor" else math.ceil(keep - 1e-9))


def kept_indices(scores: Tensor, k: int) -> Tensor:
    """Positions of the k highest scores of every (batch, head), sorted by position."""
    return scores.topk(k, dim=-1).indices.sort(dim=-1).values


def gather_positions(states: Tensor, indices: Tensor) -> Tensor:
    """states (batch, heads, seq, dim) restricted to indices (batch, heads, k)."""
    return states.gather(2, indices[..., None].expand(-1, -1, -1, states.shape[-1]))


def cache_entries(cache: Cache) -> int:
    """KV pairs stored in the cache, summed over layers, batch and KV heads."""
    return sum(layer.entries() if isinstance(layer, HeadwiseLayer) else layer.keys[..., 0].numel()
               for layer in cache.layers if layer.is_initialized)


# Tokens seen by each cache compressed under a press (absolute length), shared by all presses so a
# cache prefilled under one `with press(model)` block continues correctly under another.
_TOKENS_SEEN: weakref.WeakKeyDictionary[Cache, int] = weakref.WeakKeyDictionary()


def tokens_seen(cache: Cache) -> int:
    """Absolute number of tokens the cache has seen, i.e. the position of the next token."""
    return _TOKENS_SEEN.get(cache, cache.get_seq_length())


def _cache_argument(kwargs: dict[str, Any]) -> Cache | None:
    return kwargs.get("cache", kwargs.get("past_key_values"))


def layer_mask(layer: CacheLayerMixin, query_length: int, n_query_heads: int, dtype: torch.dtype) -> Tensor | None:
    """Additive mask (batch or 1, heads or 1, query_length, stored + query_length) in cache slots.

    Query i sees every stored slot (but padding) and the new tokens up to itself. None when nothing
    needs hiding (one new token, no padding).
    """
    stored = layer.get_seq_length()
    slots = torch.arange(stored + query_length, device=layer.keys.device)
    allowed = (slots[None, :] <= stored + torch.arange(query_length, device=slots.device)[:, None])[None, None]
    if isinstance(layer, HeadwiseLayer):
        visible = layer.visible_slots()
        visible = torch.cat([visible, visible.new_ones(*visible.shape[:2], query_length)], dim=-1)
        groups = n_query_heads // visible.shape[1]
        allowed = allowed & visible.repeat_interleave(groups, dim=1)[:, :, None, :]
    elif query_length == 1:
        return None
    return torch.zeros(allowed.shape, dtype=dtype, device=slots.device).masked_fill(~allowed, torch.finfo(dtype).min)


class PressBase:
    """Hook machinery shared by presses and press wrappers; subclasses define `compress_layer`."""

    def compress_layer(self, module: nn.Module, hidden_states: Tensor, layer: CacheLayerMixin,
                       attentions: Tensor | None, kwargs: dict[str, Any]) -> CacheLayerMixin:
        """Return the layer's cache after eviction (the same object, or a replacement)."""
        raise NotImplementedError

    def attach(self, model: nn.Module) -> None:
        """Read what scoring needs from the model (rotary embedding, filters' shape); default: nothing."""

    def _mask_before_attention(self, module: nn.Module, args: tuple, kwargs: dict[str, Any]):
        cache = _cache_argument(kwargs)
        if cache is None or module.layer_idx >= len(cache.layers):
            return None
        layer = cache.layers[module.layer_idx]
        if not layer.is_initialized or layer.get_seq_length() == 0:
            return None
        hidden_states = kwargs["hidden_states"]
        n_heads = module.config.num_attention_heads
        kwargs["attention_mask"] = layer_mask(layer, hidden_states.shape[1], n_heads, hidden_states.dtype)
        return args, kwargs

    def _compress_after_prefill(self, module: nn.Module, args: tuple, kwargs: dict[str, Any], output: Any) -> None:
        cache = _cache_argument(kwargs)
        if cache is None:
            return
        hidden_states = kwargs["hidden_states"]
        layer = cache.layers[module.layer_idx]
        if layer.get_seq_length() != hidden_states.shape[1]:  # the cache held entries before: not a prefill
            return
        with torch.no_grad():
            cache.layers[module.layer_idx] = self.compress_layer(module, hidden_states, layer, output[1], kwargs)

    @contextmanager
    def __call__(self, model: nn.Module) -> Iterator[nn.Module]:
        """Compress every attention layer's cache after prefill while the context is open."""
        stack = decoder(model)
        self.attach(model)

        def absolute_positions(_module, args, kwargs):
            mask = kwargs.get("attention_mask")
            if isinstance(mask, Tensor) and mask.ndim == 2 and not bool(mask.all()):
                raise ValueError("KV presses do not support padded batches; pass prompts of equal length.")
            cache = _cache_argument(kwargs)
            if cache is None or kwargs.get("position_ids") is not None:
                return None
            inputs = kwargs.get("input_ids") if kwargs.get("input_ids") is not None else kwargs["inputs_embeds"]
            start = tokens_seen(cache)
            kwargs["position_ids"] = torch.arange(start, start + inputs.shape[1], device=inputs.device)[None]
            return args, kwargs

        def count_tokens(_module, args, kwargs, output):
            cache = getattr(output, "cache", None)
            if cache is None:  # transformers releases before the rename
                cache = getattr(output, "past_key_values", None)
            if cache is not None:
                positions = kwargs.get("position_ids")
                inputs = kwargs.get("input_ids") if kwargs.get("input_ids") is not None else kwargs["inputs_embeds"]
                _TOKENS_SEEN[cache] = int(positions.max()) + 1 if positions is not None else inputs.shape[1]

        handles = [stack.register_forward_pre_hook(absolute_positions, with_kwargs=True),
                   stack.register_forward_hook(count_tokens, with_kwargs=True)]
        for decoder_layer in stack.layers:
            attention = decoder_layer.self_attn
            handles.append(attention.register_forward_pre_hook(self._mask_before_attention, with_kwargs=True))
            handles.append(attention.register_forward_hook(self._compress_after_prefill, with_kwargs=True))
        try:
            yield model
        finally:
            for handle in handles:
                handle.remove()


@dataclass
class Press(PressBase):
    """A scoring press: keep the top n_kept scores of every (batch, KV head) of every layer."""

    compression_ratio: float = 0.0
    rounding: Literal["floor", "ceil"] = "floor"

    def __post_init__(self) -> None:
        if not 0 <= self.compression_ratio < 1:
            raise ValueError(f"compression_ratio is the fraction removed, in [0, 1); got {self.compression_ratio}.")
        if self.rounding not in ("floor", "ceil"):
            raise ValueError(f"rounding must be 'floor' or 'ceil'; got {self.rounding!r}.")

    def n_kept(self, n: int) -> int:
        return n_kept(n, self.compression_ratio, self.rounding)

    def compresses_layer(self, layer_idx: int) -> bool:
        """Whether this press evicts in layer `layer_idx` (all layers unless a press skips some)."""
        return True

    def score(self, module: nn.Module, hidden_states: Tensor, keys: Tensor, values: Tensor,
              attentions: Tensor | None, kwargs: dict[str, Any]) -> Tensor:
        """(batch, kv_heads, seq) importance of each cached pair; higher = keep."""
        raise NotImplementedError

    def compress(self, module: nn.Module, hidden_states: Tensor, keys: Tensor, values: Tensor,
                 attentions: Tensor | None, kwargs: dict[str, Any]) -> tuple[Tensor, Tensor]:
        """Keys and values of the kept pairs, per KV head, in positional order."""
        k = self.n_kept(keys.shape[-2])
        if k == keys.shape[-2] or not self.compresses_layer(module.layer_idx):
            return keys, values
        indices = kept_indices(self.score(module, hidden_states, keys, values, attentions, kwargs), k)
        return gather_positions(keys, indices), gather_positions(values, indices)

    def compress_layer(self, module: nn.Module, hidden_states: Tensor, layer: CacheLayerMixin,
                       attentions: Tensor | None, kwargs: dict[str, Any]) -> CacheLayerMixin:
        if isinstance(layer, HeadwiseLayer):
            raise ValueError(f"{type(self).__name__} cannot compress a head-wise cache; put AdaKVPress last.")
        layer.keys, layer.values = self.compress(module, hidden_states, layer.keys, layer.values, attentions, kwargs)
        return layer

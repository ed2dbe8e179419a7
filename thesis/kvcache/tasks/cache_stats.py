"""What a compressed cache holds, against what the uncompressed one would: achieved ratio and bytes.

The achieved ratio is 1 - stored pairs / (layers x KV heads x batch x context tokens), the
definition of r in spec 0 measured instead of requested; bytes are pairs x head_dim x 2 (keys and
values) x bytes per element, the memory formula of thesis 4.1.1, applied to what is stored
(`cache_bytes`) and to every pair of the context (`uncompressed_bytes`).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn
from transformers.cache_utils import Cache

from thesis.kvcache.press import cache_entries


@dataclass(frozen=True)
class CacheStats:
    achieved_ratio: float
    cache_bytes: int
    uncompressed_bytes: int


def cache_stats(model: nn.Module, cache: Cache, batch: int, context_tokens: int) -> CacheStats:
    config = model.config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    full = config.num_hidden_layers * config.num_key_value_heads * batch * context_tokens
    stored = cache_entries(cache)
    pair_bytes = head_dim * 2 * next(model.parameters()).element_size()
    return CacheStats(achieved_ratio=1 - stored / full, cache_bytes=stored * pair_bytes,
                      uncompressed_bytes=full * pair_bytes)

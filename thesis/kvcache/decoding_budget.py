"""A decoding budget that follows the tokens seen: "N x" of thesis 4.3 decoding (Table 4.4).

The thesis reports decoding runs by how much smaller the final cache is than the uncompressed one
("n x: the final cache size is n times smaller than would be without compression"; spec 0). A fixed
`DecodingPress.target_size` gives that factor only for one generation length; reasoning traces differ
in length by orders of magnitude. `FactorDecodingPress` keeps `DecodingPress`'s schedule (every
`compression_interval` new tokens per layer, prompt left whole unless `compress_prefill`, same scoring
on the buffered hidden states) but cuts each layer to floor(t / N) pairs per KV head, t being the
tokens the cache has seen at that moment (the absolute position of the newest one + 1), i.e. to 1/N
of what an uncompressed cache would hold then. Between compressions a layer grows by up to
`compression_interval` - 1 pairs, so the final cache is 1/N of the tokens seen only when the
generation ends right after a compression; the evaluation measures the final cache (achieved ratio,
bytes) instead of assuming it. The inherited `target_size` is not used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn
from transformers.cache_utils import CacheLayerMixin

from thesis.kvcache.decoding import DecodingPress, keeping


def factor_budget(tokens_seen: int, compression_factor: float) -> int:
    """Pairs per KV head that hold 1/N of `tokens_seen` (at least 1)."""
    return max(1, math.floor(tokens_seen / compression_factor + 1e-9))


@dataclass
class FactorDecodingPress(DecodingPress):
    """`DecodingPress` whose budget at each compression is floor(tokens seen / compression_factor)."""

    compression_factor: float = 2.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.compression_factor, bool) or not self.compression_factor > 1:
            raise ValueError(f"compression_factor N keeps 1/N of the tokens seen and must be > 1; "
                             f"got {self.compression_factor!r} (N = 0 or 1 is the uncompressed model: use no press).")

    def compress_layer(self, module: nn.Module, hidden_states: Tensor, layer: CacheLayerMixin,
                       attentions: Tensor | None, kwargs: dict[str, Any]) -> CacheLayerMixin:
        """Keep floor(t / N) best-scored pairs of each KV head when the layer holds more."""
        seen = int(kwargs["position_ids"][0, -1]) + 1
        budget, n = factor_budget(seen, self.compression_factor), layer.get_seq_length()
        if n <= budget:
            return layer
        with keeping(self.press, budget, n) as press:
            layer.keys, layer.values = press.compress(module, hidden_states, layer.keys, layer.values, None, kwargs)
        return layer

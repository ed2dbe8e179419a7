"""KNorm (thesis Sec. 4.1, spec A.1): keep the keys with the lowest L2 norm, and their values; and the
schedule by which the KNorm authors' language-modelling code prunes while reading a text.

Low-norm keys tend to receive high attention, so the score is s_t = -||k_t||_2, computed in
float32 at least (bf16 norms tie). No attention weights are needed. The thesis (and its authors'
code) leave layers 0 and 1 untouched, their norms correlating poorly with attention (Fig. 4.2),
and keep ceil(n (1 - r)) pairs; kvpress compresses every layer and keeps floor(n (1 - r))
(spec E.1, E.2). `KNormPress()` follows the thesis; `KNormPress(skip_layers=(), rounding="floor")`
is kvpress's `KnormPress`. With skipped layers the global ratio is r (L - |skip|) / L.
`keep="high"` is the thesis's "keep high norm" control (knorm_inverse: score +||k_t||_2), which
the thesis shows to be worse than random eviction (Figs. 4.3, 4.4).

LM schedule (spec A.1 "streaming LM protocol", the authors' `l2_compress`): after every forward
call, each non-skipped layer holding n >= `prune_after` pairs keeps ceil(`keep_ratio` n) of them
(keep_ratio 0.98 in the code), so while a text is read token by token the cache oscillates between
ceil(0.98 P) and P. `DecodingPress` cannot express it exactly: its counter starts at the prefill,
so with interval P - ceil(0.98 P) its first eviction happens at whatever multiple of the interval
first exceeds ceil(0.98 P), not at P, and a prompt longer than P is cut to a fixed target instead of
to 98 % of itself. `PruneAfterPress` wraps any scoring press (KNorm, knorm_inverse, random,
FastGen-lite) with this rule; like the authors' model-level setting, its `skip_layers` apply to
whichever press it wraps (their random baseline also leaves layers 0 and 1 whole); the wrapped
press's own `skip_layers` still apply, so give it none. `target_size` is not used.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, Literal

from torch import Tensor, nn
from transformers.cache_utils import CacheLayerMixin

from thesis.kvcache.decoding import DecodingPress, keeping
from thesis.kvcache.press import Press


@dataclass
class KNormPress(Press):
    """Evict the highest-norm keys (`keep="low"`, thesis) or the lowest (`keep="high"`, the inverse
    control) in every layer not in `skip_layers`."""

    rounding: Literal["floor", "ceil"] = "ceil"
    skip_layers: tuple[int, ...] = (0, 1)
    keep: Literal["low", "high"] = "low"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.keep not in ("low", "high"):
            raise ValueError(f"keep must be 'low' (KNorm) or 'high' (keep-high-norm control); got {self.keep!r}.")

    def compresses_layer(self, layer_idx: int) -> bool:
        return layer_idx not in self.skip_layers

    def score(self, module: nn.Module, hidden_states: Tensor, keys: Tensor, values: Tensor,
              attentions: Tensor | None, kwargs: dict[str, Any]) -> Tensor:
        norms = keys.float().norm(dim=-1)
        return -norms if self.keep == "low" else norms


@dataclass
class PruneAfterPress(DecodingPress):
    """After every call, layers holding n >= `prune_after` pairs keep ceil(`keep_ratio` n) per KV head,
    chosen by the wrapped press; layers in `skip_layers` are never pruned."""

    prune_after: int = 1000
    keep_ratio: float = 0.98
    skip_layers: tuple[int, ...] = (0, 1)
    compression_interval: int = 1
    compress_prefill: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.prune_after, bool) or not isinstance(self.prune_after, int) or self.prune_after < 1:
            raise ValueError(f"prune_after must be a positive number of pairs; got {self.prune_after!r}.")
        if not 0 < self.keep_ratio < 1:
            raise ValueError(f"keep_ratio must be in (0, 1) (the KNorm code uses 0.98); got {self.keep_ratio!r}.")
        if self.compression_interval != 1:
            raise ValueError("PruneAfterPress checks the cache after every call: compression_interval must be 1.")

    @contextmanager
    def __call__(self, model: nn.Module) -> Iterator[nn.Module]:
        """DecodingPress's hooks, plus the wrapped press's own recording hooks if it has any
        (FastGen-lite records the token ids it protects)."""
        recording = getattr(self.press, "recording", None)
        with recording(model) if recording is not None else nullcontext(), super().__call__(model):
            yield model

    def kept_after_pruning(self, n: int) -> int:
        """Pairs per KV head a layer holding n keeps: n below `prune_after`, else ceil(keep_ratio n)."""
        return n if n < self.prune_after else math.ceil(self.keep_ratio * n - 1e-9)

    def compress_layer(self, module: nn.Module, hidden_states: Tensor, layer: CacheLayerMixin,
                       attentions: Tensor | None, kwargs: dict[str, Any]) -> CacheLayerMixin:
        n = layer.get_seq_length()
        kept = self.kept_after_pruning(n)
        if kept == n or module.layer_idx in self.skip_layers:
            return layer
        with keeping(self.press, kept, n) as press:
            layer.keys, layer.values = press.compress(module, hidden_states, layer.keys, layer.values, None, kwargs)
        return layer

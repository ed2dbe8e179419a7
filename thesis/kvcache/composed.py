"""Presses applied one after the other in every layer (spec D.0 `ComposedPress`).

Each press sees the cache its predecessor left, so ratios compose multiplicatively: the combined
ratio is 1 - prod_i (1 - r_i) (up to each press's rounding of its kept count). A head-wise press
(`AdaKVPress`) can only come last, since later presses need one length for all heads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn
from transformers.cache_utils import CacheLayerMixin

from thesis.kvcache.press import PressBase


@dataclass
class ComposedPress(PressBase):
    """Apply `presses` in order after each layer's prefill."""

    presses: tuple[PressBase, ...]

    def __post_init__(self) -> None:
        if not self.presses:
            raise ValueError("ComposedPress needs at least one press.")

    @property
    def compression_ratio(self) -> float:
        return 1 - math.prod(1 - press.compression_ratio for press in self.presses)

    def attach(self, model: nn.Module) -> None:
        for press in self.presses:
            press.attach(model)

    def compress_layer(self, module: nn.Module, hidden_states: Tensor, layer: CacheLayerMixin,
                       attentions: Tensor | None, kwargs: dict[str, Any]) -> CacheLayerMixin:
        for press in self.presses:
            layer = press.compress_layer(module, hidden_states, layer, attentions, kwargs)
        return layer

"""Two small presses the miniature needs beside those of `thesis.kvcache`.

- `KeepHighNormPress`: the inverse of KNorm, evicting the *lowest*-norm keys (thesis 4.1's control,
  "knorm_inverse" in spec G); every layer compressed.
- `RecentWindowPress`: any scoring press with the last `window` positions protected, the recent
  window of the Q-Filters authors' streaming cache (spec E.7, F.b M2 protocol (ii) w = 16). It is a
  `Press`, so `DecodingPress` accepts it; the ratio it is given is handed to the wrapped press.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from thesis.kvcache.baselines import protect
from thesis.kvcache.press import Press


@dataclass
class KeepHighNormPress(Press):
    """Evict the lowest-norm keys."""

    def score(self, module: nn.Module, hidden_states: Tensor, keys: Tensor, values: Tensor,
              attentions: Tensor | None, kwargs: dict[str, Any]) -> Tensor:
        return keys.float().norm(dim=-1)


@dataclass
class RecentWindowPress(Press):
    """`press`'s scores with the most recent `window` positions always kept."""

    press: Press | None = None
    window: int = 16

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.press, Press):
            raise ValueError(f"RecentWindowPress wraps a scoring Press; got {type(self.press).__name__}.")
        if self.window < 0:
            raise ValueError(f"window must be >= 0; got {self.window}.")

    def attach(self, model: nn.Module) -> None:
        self.press.attach(model)

    def compresses_layer(self, layer_idx: int) -> bool:
        return self.press.compresses_layer(layer_idx)

    def score(self, module: nn.Module, hidden_states: Tensor, keys: Tensor, values: Tensor,
              attentions: Tensor | None, kwargs: dict[str, Any]) -> Tensor:
        self.press.compression_ratio = self.compression_ratio
        scores = self.press.score(module, hidden_states, keys, values, attentions, kwargs).float()
        if self.window == 0:
            return scores
        return protect(scores, slice(max(0, keys.shape[-2] - self.window), None))

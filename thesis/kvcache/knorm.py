"""KNorm (thesis Sec. 4.1, spec A.1): keep the keys with the lowest L2 norm, and their values.

Low-norm keys tend to receive high attention, so the score is s_t = -||k_t||_2, computed in
float32 at least (bf16 norms tie). No attention weights are needed. The thesis (and its authors'
code) leave layers 0 and 1 untouched, their norms correlating poorly with attention (Fig. 4.2),
and keep ceil(n (1 - r)) pairs; kvpress compresses every layer and keeps floor(n (1 - r))
(spec E.1, E.2). `KNormPress()` follows the thesis; `KNormPress(skip_layers=(), rounding="floor")`
is kvpress's `KnormPress`. With skipped layers the global ratio is r (L - |skip|) / L.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from torch import Tensor, nn

from thesis.kvcache.press import Press


@dataclass
class KNormPress(Press):
    """Evict the highest-norm keys in every layer not in `skip_layers`."""

    rounding: Literal["floor", "ceil"] = "ceil"
    skip_layers: tuple[int, ...] = (0, 1)

    def compresses_layer(self, layer_idx: int) -> bool:
        return layer_idx not in self.skip_layers

    def score(self, module: nn.Module, hidden_states: Tensor, keys: Tensor, values: Tensor,
              attentions: Tensor | None, kwargs: dict[str, Any]) -> Tensor:
        return -keys.float().norm(dim=-1)

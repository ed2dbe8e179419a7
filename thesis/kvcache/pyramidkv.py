"""PyramidKV (Cai et al. [80]; thesis 4.3, Figs. 4.46 and 4.51; spec D.1): SnapKV scores, layer-wise budgets.

Lower layers spread their attention widely and upper layers concentrate it on a few tokens
("pyramidal information funneling"), so the per-(layer, KV head) budget decreases linearly with
depth while the total over the layers stays that of a uniform press at the same ratio. The thesis
only names the method; the budget rule below is the one of kvpress's `PyramidKVPress`, which the
thesis's sweeps ran (rewritten here from its description, beta = 20 as in spec G).

For n cached pairs, ratio r, L layers and SnapKV's observation window w, with B = n (1 - r) the
uniform budget:
    b_min = B / beta,   b_max = 2 B - b_min;
    if b_max >= n - w:  b_max = n - w,  b_min = 2 B - b_max;
    b_l = round(b_max - l (b_max - b_min) / (L - 1)),   l = 0 .. L - 1,
so the budgets average B (up to the rounding of each layer). When the pyramid does not fit
(not n >= b_max >= b_min >= w, e.g. short prompts or high ratios, or L = 1) every layer keeps the
uniform count `n_kept(n)` (kvpress falls back to SnapKV with round(B); here the press's rounding,
floor by default, as every other press). Within a layer each KV head keeps its b_l best SnapKV scores
(the window is protected, so b_l >= w keeps it whole), in positional order (spec E.3).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from thesis.kvcache.baselines import SnapKVPress
from thesis.kvcache.press import gather_positions, kept_indices


@dataclass
class PyramidKVPress(SnapKVPress):
    """SnapKV with budgets decreasing linearly from the first layer to the last."""

    beta: float = 20.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.beta < 1:
            raise ValueError(f"PyramidKV's beta (ratio of the mean budget to the last layer's) must be >= 1; "
                             f"got {self.beta}.")

    def layer_budget(self, n: int, layer_idx: int, n_layers: int) -> int:
        """Pairs kept per KV head in layer `layer_idx` of `n_layers` for n cached pairs (module docstring)."""
        uniform = n * (1 - self.compression_ratio)
        smallest = uniform / self.beta
        largest = 2 * uniform - smallest
        if largest >= n - self.window:
            largest = n - self.window
            smallest = 2 * uniform - largest
        if n_layers < 2 or not n >= largest >= smallest >= self.window:
            return self.n_kept(n)
        step = (largest - smallest) / (n_layers - 1)
        return round(largest - layer_idx * step)

    def compress(self, module: nn.Module, hidden_states: Tensor, keys: Tensor, values: Tensor,
                 attentions: Tensor | None, kwargs: dict[str, Any]) -> tuple[Tensor, Tensor]:
        n = keys.shape[-2]
        if self.compression_ratio == 0 or not self.compresses_layer(module.layer_idx):
            return keys, values
        budget = self.layer_budget(n, module.layer_idx, module.config.num_hidden_layers)
        if budget >= n:
            return keys, values
        indices = kept_indices(self.score(module, hidden_states, keys, values, attentions, kwargs), budget)
        return gather_positions(keys, indices), gather_positions(values, indices)

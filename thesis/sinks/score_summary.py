"""Per-step score histograms (Figs. 5.52 / 5.58) and the eps sweep (Fig. 5.59), reduced on the fly.

`SinkCapture` drops each call's full key scores after ranking them; `ScoreSummary.observe` is its
`on_scores` hook and folds every call into fixed-size counters before they are dropped: a histogram
of the key scores per denoising step (pooled over layers, heads, keys and prompts) and, for each eps
of a grid, how many keys pass Eq. 5.16. Memory is steps x bins + len(eps grid), whatever S is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch

from thesis.core.errors import ConfigError
from thesis.sinks.detection import is_sink


def histogram(scores: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """Counts (len(edges) - 1,) of `scores` (any shape): bin i holds edges[i] <= x < edges[i + 1];
    values at or above the last edge fall in the last bin, values below the first edge are refused."""
    values = scores.detach().flatten().float().cpu()
    if values.numel() and values.min() < edges[0]:
        raise ConfigError(f"score {float(values.min())} lies below the first histogram edge {float(edges[0])}: "
                          "attention sums cannot be negative, so pass probabilities, not logits")
    bins = torch.bucketize(values, edges, right=True) - 1
    return torch.bincount(bins.clamp(max=len(edges) - 2), minlength=len(edges) - 1)


def non_sink_share(scores: torch.Tensor, eps_grid: Sequence[float]) -> list[float]:
    """For each eps, the share of keys of `scores` (..., keys) that are not sinks by Eq. 5.16."""
    return [1.0 - float(is_sink(scores, eps).float().mean()) for eps in eps_grid]


@dataclass
class ScoreSummary:
    """Counters filled by `observe(step, layer, scores)`, the `SinkCapture.on_scores` hook."""

    edges: torch.Tensor
    eps_grid: Sequence[float]
    step_counts: dict[int, torch.Tensor] = field(default_factory=dict)
    sink_counts: torch.Tensor = field(init=False)
    n_keys: int = 0

    def __post_init__(self) -> None:
        if len(self.edges) < 2 or not torch.all(self.edges[1:] > self.edges[:-1]):
            raise ConfigError("histogram edges must be increasing and at least two: check method.hist_bins / hist_max")
        self.sink_counts = torch.zeros(len(self.eps_grid), dtype=torch.long)

    def observe(self, step: int, layer: int, scores: torch.Tensor) -> None:
        scores = scores.detach().float().cpu()  # one transfer per call, then CPU counting
        counts = histogram(scores, self.edges)
        self.step_counts[step] = self.step_counts.get(step, torch.zeros_like(counts)) + counts
        for index, eps in enumerate(self.eps_grid):
            self.sink_counts[index] += int(is_sink(scores, eps).sum())
        self.n_keys += scores.numel()

    def histogram_rows(self) -> list[dict]:
        return [{"step": step, "bin_low": float(self.edges[i]), "bin_high": float(self.edges[i + 1]),
                 "count": int(counts[i])}
                for step, counts in sorted(self.step_counts.items()) for i in range(len(counts))]

    def sweep_rows(self) -> list[dict]:
        return [{"eps": float(eps), "non_sink_share": 1.0 - int(sinks) / self.n_keys, "n_keys": self.n_keys}
                for eps, sinks in zip(self.eps_grid, self.sink_counts)]

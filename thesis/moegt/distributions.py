"""Histograms of the Section 5.2 GCN analysis (thesis S4, Figs. 5.21 and 5.30), as long-form rows
for a run's tables:

- `score_histogram_rows`: a classifier's output score per true class (Fig. 5.30a);
- `score_band_rows`: distributions of per-event variables (Delta R(b1, b2), m(b1, b2)) for signal and
  background events in the high-score band (score > 0.8) and the low-score band (score < 0.2)
  (Figs. 5.30b-c);
- `feature_distribution_rows`: raw input features per process, signal / tt-bar / single-top
  (Fig. 5.21: lepton pT, missing transverse energy).

Every histogram is unit-normalised (density integrates to 1 over its bins); `count` keeps the raw
number of events per bin, and values outside the bin range are counted in no bin.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

CLASS_NAMES = {1: "signal", 0: "background"}
#: the thesis's score bands: high = score > 0.8, low = score < 0.2
SCORE_BANDS = {"high": (0.8, None), "low": (None, 0.2)}


def bin_edges(spec) -> np.ndarray:
    """Edges from a (low, high, bins) triple of the config."""
    low, high, bins = spec
    if not high > low or int(bins) < 1:
        raise ValueError(f"histogram range {list(spec)} must be [low, high, bins] with high > low and bins >= 1")
    return np.linspace(float(low), float(high), int(bins) + 1)


def unit_histogram(values: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Counts per bin and the density normalised to unit area over the bins (zeros without entries)."""
    counts, _ = np.histogram(np.asarray(values, dtype=float), bins=edges)
    total = counts.sum()
    density = counts / (total * np.diff(edges)) if total else np.zeros(len(counts))
    return counts, density


def _rows(values: np.ndarray, edges: np.ndarray, **labels) -> list[dict[str, object]]:
    counts, density = unit_histogram(values, edges)
    return [{**labels, "bin_low": float(lo), "bin_high": float(hi), "count": int(c), "density": float(d)}
            for lo, hi, c, d in zip(edges[:-1], edges[1:], counts, density)]


def in_band(scores: np.ndarray, band: str) -> np.ndarray:
    """Mask of the events whose score lies strictly inside the band (`SCORE_BANDS`)."""
    low, high = SCORE_BANDS[band]
    scores = np.asarray(scores, dtype=float)
    return (scores > (low if low is not None else -np.inf)) & (scores < (high if high is not None else np.inf))


def score_histogram_rows(scores: np.ndarray, labels: np.ndarray, bins: int = 20) -> list[dict[str, object]]:
    """Output-score distribution per true class over [0, 1]."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    edges[-1] = np.nextafter(1.0, 2.0)  # a score of exactly 1 falls in the last bin
    labels = np.asarray(labels)
    return [row for label, name in CLASS_NAMES.items()
            for row in _rows(np.asarray(scores)[labels == label], edges, variable="score", band="all", cls=name)]


def score_band_rows(variables: pd.DataFrame, scores: np.ndarray, labels: np.ndarray,
                    edges: dict[str, np.ndarray]) -> list[dict[str, object]]:
    """Per variable (a column of `variables`, one row per scored event), band and true class."""
    labels = np.asarray(labels)
    rows = []
    for variable, variable_edges in edges.items():
        values = variables[variable].to_numpy(dtype=float)
        for band in SCORE_BANDS:
            chosen = in_band(scores, band)
            for label, name in CLASS_NAMES.items():
                rows += _rows(values[chosen & (labels == label)], variable_edges, variable=variable, band=band,
                              cls=name)
    return rows


def feature_distribution_rows(events: pd.DataFrame, edges: dict[str, np.ndarray]) -> list[dict[str, object]]:
    """Per raw column and process (the `process` column of the event table)."""
    missing = [c for c in (*edges, "process") if c not in events.columns]
    if missing:
        raise KeyError(f"the event table has no column {missing[0]!r}; feature distributions take release "
                       f"columns such as pTl1 or ETMiss")
    return [row for column, column_edges in edges.items() for process, group in events.groupby("process")
            for row in _rows(group[column].to_numpy(dtype=float), column_edges, variable=column, cls=process)]

"""Figures of the Section 5.2 GCN analysis, drawn from the histogram tables of
`thesis.moegt.distributions` (one run's `tables/*.csv` or several runs concatenated; bins of equal
label are summed before normalising):

- `score_figure`: thesis Fig. 5.30, (a) output score per true class, (b) Delta R(b1, b2) and
  (c) m(b1, b2) for signal and background with score > 0.8 and < 0.2;
- `feature_figure`: thesis Fig. 5.21, unit-normalised input features per process.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from thesis.core.plotting import new_figure, save_figure

AXIS_LABELS = {"score": "output score", "delta_r_bb": r"$\Delta R(b_1, b_2)$", "m_bb": r"$m(b_1, b_2)$ [GeV]",
               "pTl1": r"lepton $p_T$ [GeV]", "ETMiss": r"$E_T^{miss}$ [GeV]"}
BAND_STYLES = {"high": "-", "low": "--", "all": "-"}
CLASS_COLOURS = {"signal": "tab:red", "background": "tab:blue", "ttbar": "tab:blue", "singletop": "tab:green"}


def _step(ax, table: pd.DataFrame, label: str, style: str, colour: str | None) -> None:
    summed = table.groupby(["bin_low", "bin_high"], as_index=False)["count"].sum()
    total = summed["count"].sum()
    if not total:
        return
    density = summed["count"] / (total * (summed.bin_high - summed.bin_low))
    edges = np.append(summed.bin_low.to_numpy(), summed.bin_high.iloc[-1])
    ax.stairs(density.to_numpy(), edges, label=label, linestyle=style, color=colour)


def _panel(ax, table: pd.DataFrame, variable: str) -> None:
    chosen = table[table.variable == variable]
    for (band, cls), group in chosen.groupby(["band", "cls"]):
        name = cls if band == "all" else f"{cls}, score {'> 0.8' if band == 'high' else '< 0.2'}"
        _step(ax, group, name, BAND_STYLES[band], CLASS_COLOURS.get(cls))
    ax.set_xlabel(AXIS_LABELS.get(variable, variable))
    ax.set_ylabel("normalised events")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=6, frameon=False)


def score_figure(scores: pd.DataFrame, bands: pd.DataFrame, out: Path, figure_id: str = "moegt_gcn_scores") \
        -> list[Path]:
    """Fig. 5.30 from `score_histogram_rows` and `score_band_rows` tables; written under out/figures."""
    fig, axes = new_figure(12.0, 3.4, ncols=3)
    _panel(axes[0], scores, "score")
    axes[0].set_yscale("log")
    for ax, variable in zip(axes[1:], ("delta_r_bb", "m_bb")):
        _panel(ax, bands, variable)
    return save_figure(fig, out, figure_id)


def feature_figure(features: pd.DataFrame, out: Path, figure_id: str = "moegt_feature_distributions") \
        -> list[Path]:
    """Fig. 5.21 from a `feature_distribution_rows` table: one panel per feature, one line per process."""
    variables = list(dict.fromkeys(features.variable))
    fig, axes = new_figure(4.0 * len(variables), 3.2, ncols=len(variables))
    for ax, variable in zip(np.atleast_1d(axes), variables):
        _panel(ax, features.assign(band="all"), variable)
    return save_figure(fig, out, figure_id)

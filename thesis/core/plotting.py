"""Figure conventions shared by every recipe: headless backend, PNG + PDF, one style."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

FLOPS_NOTE = "FLOPs: 1 multiply-add = 1 FLOP"


def new_figure(width: float = 5.0, height: float = 3.6, ncols: int | None = None, nrows: int | None = None):
    """A figure and its axes; `ncols` panels side by side (default: one per 5 inches of width).

    With `nrows` the axes are always a (nrows, ncols) array, whatever the counts; without it, one
    row as `plt.subplots` returns it (a single axis, or a 1-D array)."""
    plt.rcParams.update({"font.size": 9, "axes.spines.top": False, "axes.spines.right": False,
                         "svg.hashsalt": "thesis", "pdf.compression": 6})
    ncols = ncols or max(1, round(width / 5.0))
    if nrows is None:
        return plt.subplots(1, ncols, figsize=(width, height), constrained_layout=True)
    return plt.subplots(nrows, ncols, figsize=(width, height), constrained_layout=True, squeeze=False)


def save_figure(fig, results: Path, figure_id: str) -> list[Path]:
    """Write `results/figures/<id>.png` and `.pdf`; metadata without dates so rebuilds are stable."""
    out = results / "figures"
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{figure_id}.png", out / f"{figure_id}.pdf"]
    fig.savefig(paths[0], dpi=150, metadata={"Software": None})
    fig.savefig(paths[1], metadata={"CreationDate": None, "ModDate": None, "Producer": None, "Creator": None})
    plt.close(fig)
    return paths

"""The miniature's figures, drawn by the run into its `figures/` folder: Fig. 5.54-style main-sink
score heatmaps (layer x head), Fig. 5.56-style main-sink position over decoding steps, and the
Fig. 5.59-style share of tokens that are not sinks against eps."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from thesis.core.plotting import new_figure, save_figure


def heatmaps(head_rows: list[dict], out: Path) -> list[Path]:
    names = list(dict.fromkeys(row["model"] for row in head_rows))
    fig, axes = new_figure(width=3.0 * len(names), height=2.8, ncols=len(names))
    axes = np.atleast_1d(axes)
    top = max(row["main_score"] for row in head_rows)
    for ax, name in zip(axes, names):
        rows = [r for r in head_rows if r["model"] == name]
        grid = np.zeros((max(r["layer"] for r in rows) + 1, max(r["head"] for r in rows) + 1))
        for r in rows:
            grid[r["layer"], r["head"]] = r["main_score"]
        image = ax.imshow(grid, vmin=0, vmax=top, cmap="viridis", aspect="auto")
        ax.set(title=name, xlabel="head", ylabel="layer")
    fig.colorbar(image, ax=axes.tolist(), label="main-sink score (column sum), mean over steps")
    return save_figure(fig, out, "sinks_mini_main_sink_heatmap")


def trajectories(traces: dict[str, tuple[tuple[int, int], list[int | None]]], out: Path) -> list[Path]:
    fig, axes = new_figure(width=3.0 * len(traces), height=2.8, ncols=len(traces))
    for ax, (name, ((layer, head), path)) in zip(np.atleast_1d(axes), traces.items()):
        steps = [s for s, p in enumerate(path) if p is not None]
        ax.plot(steps, [path[s] for s in steps], marker="o", markersize=2.5, linewidth=0.8)
        ax.set(title=f"{name}: layer {layer}, head {head}", xlabel="decoding step", ylabel="main-sink position")
    return save_figure(fig, out, "sinks_mini_main_sink_position")


def eps_sweep(sweep_rows: list[dict], eps: float, out: Path) -> list[Path]:
    fig, ax = new_figure(width=4.2, height=3.0)
    for name in dict.fromkeys(row["model"] for row in sweep_rows):
        rows = [r for r in sweep_rows if r["model"] == name]
        ax.plot([r["eps"] for r in rows], [100 * r["non_sink_share"] for r in rows], marker="o", markersize=3,
                label=name)
    ax.axvline(eps, color="grey", linestyle=":", linewidth=0.8)
    ax.axhline(96, color="grey", linestyle="--", linewidth=0.8)
    ax.set(xlabel="eps", ylabel="% of tokens not sinks")
    ax.legend(fontsize=7)
    return save_figure(fig, out, "sinks_mini_eps_sweep")

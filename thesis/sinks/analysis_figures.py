"""Figures of the real-model sink analysis (thesis Figs. 5.50, 5.52-5.59), one model per run.

Every function takes the run's tables or captured tensors and writes `figures/sinks_<model>_<what>`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from thesis.core.plotting import new_figure, save_figure


def incoming_attention(name: str, layer: int, head: int, scores: dict[int, torch.Tensor], out: Path) -> list[Path]:
    """Fig. 5.50: the score of every key (x) at every step (y) for one head of the first prompt."""
    steps = sorted(scores)
    grid = np.stack([scores[s].numpy() for s in steps])
    fig, ax = new_figure(width=5.0, height=3.6)
    image = ax.imshow(grid, aspect="auto", cmap="magma", origin="lower",
                      extent=(0, grid.shape[1], steps[0], steps[-1] + 1))
    ax.set(title=f"{name}: layer {layer}, head {head}", xlabel="key position", ylabel="denoising step")
    fig.colorbar(image, ax=ax, label="incoming attention (score)")
    return save_figure(fig, out, f"sinks_{name}_incoming_attention")


def score_distribution(name: str, histogram_rows: list[dict], out: Path) -> list[Path]:
    """Figs. 5.52 / 5.58: pooled histogram of key scores, and its counts per denoising step."""
    steps = sorted({r["step"] for r in histogram_rows})
    lows = sorted({r["bin_low"] for r in histogram_rows})
    grid = np.zeros((len(lows), len(steps)))
    for r in histogram_rows:
        grid[lows.index(r["bin_low"]), steps.index(r["step"])] = r["count"]
    width = lows[1] - lows[0] if len(lows) > 1 else 1.0
    fig, (left, right) = new_figure(width=8.0, height=3.2, ncols=2)
    left.bar(lows, grid.sum(axis=1), width=width, align="edge")
    left.set(yscale="log", xlabel="key score (last bin: at or above its edge)", ylabel="keys", title=name)
    image = right.imshow(np.log10(1 + grid), aspect="auto", origin="lower", cmap="viridis",
                         extent=(steps[0], steps[-1] + 1, lows[0], lows[-1] + width))
    right.set(xlabel="denoising step", ylabel="key score")
    fig.colorbar(image, ax=right, label="log10(1 + keys)")
    return save_figure(fig, out, f"sinks_{name}_score_distribution")


def move_maps(name: str, event: dict, layer: int, head: int, maps: tuple[torch.Tensor, torch.Tensor],
              masked: tuple[torch.Tensor, torch.Tensor], index: int, out: Path) -> list[Path]:
    """Figs. 5.53 / 5.55 / 5.57: the head's attention map at the steps before and after a sink event;
    ticks on top mark keys still masked at that step."""
    fig, axes = new_figure(width=8.0, height=3.8, ncols=2)
    for ax, step, attention, is_mask in zip(axes, (event["step"], event["step"] + 1), maps, masked):
        ax.imshow(attention.numpy(), cmap="viridis", aspect="auto", vmin=0, vmax=float(attention.max()))
        ax.plot(np.flatnonzero(is_mask.numpy()), np.zeros(int(is_mask.sum())) - 1, "|", color="red", markersize=4)
        ax.set(title=f"step {step}", xlabel="key", ylabel="query")
    fig.suptitle(f"{name}, layer {layer}, head {head}: sink {event['kind']} {event['from']} -> {event['to']}")
    return save_figure(fig, out, f"sinks_{name}_event{index}_{event['kind']}")


def main_sink_heatmap(name: str, trajectory_rows: list[dict], out: Path) -> list[Path]:
    """Fig. 5.54: main-sink score per (layer, head), mean over steps and prompts where it is a sink."""
    layers = max(r["layer"] for r in trajectory_rows) + 1
    heads = max(r["head"] for r in trajectory_rows) + 1
    total, count = np.zeros((layers, heads)), np.zeros((layers, heads))
    for r in trajectory_rows:
        if r["is_sink"]:
            total[r["layer"], r["head"]] += r["score"]
            count[r["layer"], r["head"]] += 1
    fig, ax = new_figure(width=4.5, height=3.6)
    image = ax.imshow(np.divide(total, count, out=np.zeros_like(total), where=count > 0), aspect="auto", cmap="viridis")
    ax.set(title=name, xlabel="head", ylabel="layer")
    fig.colorbar(image, ax=ax, label="main-sink score, mean over steps (0: no sink)")
    return save_figure(fig, out, f"sinks_{name}_main_sink_heatmap")


def main_sink_position(name: str, layer: int, head: int, path: list[int | None], out: Path) -> list[Path]:
    """Fig. 5.56: position of the head's main sink at each step (gaps: no sink)."""
    steps = [s for s, p in enumerate(path) if p is not None]
    fig, ax = new_figure(width=4.5, height=3.0)
    ax.plot(steps, [path[s] for s in steps], marker="o", markersize=2.5, linewidth=0.8)
    ax.set(title=f"{name}: layer {layer}, head {head}", xlabel="denoising step", ylabel="main-sink position")
    return save_figure(fig, out, f"sinks_{name}_main_sink_position")


def eps_sweep(name: str, sweep_rows: list[dict], eps: float, out: Path) -> list[Path]:
    """Fig. 5.59: % of keys that are not sinks against eps."""
    fig, ax = new_figure(width=4.2, height=3.0)
    ax.plot([r["eps"] for r in sweep_rows], [100 * r["non_sink_share"] for r in sweep_rows], marker="o", markersize=3)
    ax.axvline(eps, color="grey", linestyle=":", linewidth=0.8)
    ax.axhline(96, color="grey", linestyle="--", linewidth=0.8)
    ax.set(title=name, xlabel="eps", ylabel="% of tokens not sinks")
    return save_figure(fig, out, f"sinks_{name}_eps_sweep")

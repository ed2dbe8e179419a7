"""Figures of the SpARE sweeps, from the seed-mean tables the runners write: EM by edited layer
(Fig. 5.5), EM by number of collected examples for the MI ranking and for the means (Fig. 5.10),
cumulative MI share by ranked latents per layer (Figs. 5.11-5.13) and the probe / kurtosis
trajectories after SpARE at one layer (Fig. 5.6). Each writes `<stem>.png`."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from thesis.core.plotting import new_figure, plt

#: steering to context blue, to memory green, no control grey (Fig. 5.6 colours)
DIRECTION_COLOURS = {"context": "tab:blue", "memory": "tab:green", "none": "tab:grey"}


def _save(fig, stem: Path) -> None:
    stem.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(f"{stem}.png", dpi=130)
    plt.close(fig)


def plot_layerwise(steered: pd.DataFrame, none: pd.Series, stem: Path, title: str) -> None:
    """`steered`: seed-mean EM indexed by edited layer; `none`: the no-control means."""
    fig, ax = new_figure(width=5.5, height=3.4)
    ax.plot(steered.index, steered.em_c, "o-", color=DIRECTION_COLOURS["context"], label="EM_C (to context)")
    ax.plot(steered.index, steered.em_m, "o-", color=DIRECTION_COLOURS["memory"], label="EM_M (to memory)")
    ax.axhline(none.em_c, ls="--", color=DIRECTION_COLOURS["context"], lw=0.8, label="EM_C no control")
    ax.axhline(none.em_m, ls="--", color=DIRECTION_COLOURS["memory"], lw=0.8, label="EM_M no control")
    ax.set(xlabel="edited layer", ylabel="EM (%)", title=title)
    ax.legend(fontsize=7)
    _save(fig, stem)


def plot_n_sweep(means: pd.DataFrame, stem: Path, title: str) -> None:
    """`means` indexed by (varied, n): (a) N for the MI ranking, (b) N for the mean vectors; the
    run with every example dashed."""
    fig, axes = new_figure(width=10, height=3.4, ncols=2)
    for ax, varied, label in zip(axes, ("mi", "means"), ("(a) examples for MI", "(b) examples for z_C, z_M")):
        if varied in means.index.get_level_values(0):
            part = means.loc[varied].sort_index()
            ax.plot(part.index, part.em_c, "o-", color=DIRECTION_COLOURS["context"], label="EM_C")
            ax.plot(part.index, part.em_m, "o-", color=DIRECTION_COLOURS["memory"], label="EM_M")
        if "all" in means.index.get_level_values(0):
            every = means.loc["all"].iloc[0]
            ax.axhline(every.em_c, ls="--", color=DIRECTION_COLOURS["context"], lw=0.8)
            ax.axhline(every.em_m, ls="--", color=DIRECTION_COLOURS["memory"], lw=0.8)
        ax.set_xscale("log", base=2)
        ax.set(xlabel="N", ylabel="EM (%)", title=label)
        ax.legend(fontsize=7)
    fig.suptitle(title)
    _save(fig, stem)


def plot_mi_curves(curve: pd.DataFrame, stem: Path, title: str) -> None:
    """Cumulative MI share K (x) against the number of ranked latents k (y), one line per layer."""
    fig, ax = new_figure(width=5.5, height=3.6)
    for layer, part in curve.groupby("layer"):
        ax.plot(part.share, part.k, label=f"layer {layer}")
    ax.set(xlabel="cumulative MI share K", ylabel="selected latents k", title=title)
    ax.legend(fontsize=6)
    _save(fig, stem)


def plot_trajectory(rows: pd.DataFrame, edited_layer: int, stem: Path, title: str) -> None:
    """(a) conflict-probe score and (b) hidden-state kurtosis by layer, per steering direction."""
    fig, axes = new_figure(width=10, height=3.4, ncols=2)
    for ax, column in zip(axes, ("probe_score", "kurtosis")):
        for steering, part in rows.groupby("steering"):
            part = part.sort_values("layer")
            ax.plot(part.layer, part[column], "o-", ms=3, color=DIRECTION_COLOURS.get(steering), label=steering)
        ax.axvline(edited_layer, ls=":", color="black", lw=0.8)
        ax.set(xlabel="layer", ylabel=column.replace("_", " "))
        ax.legend(fontsize=7)
    fig.suptitle(title)
    _save(fig, stem)

"""Figures rebuilt from collected CSVs (`results/<experiment>/{probe,stats}.csv`) by the recipes in
experiments/: probe AUROC by layer per kind (thesis colours: hidden red, MLP blue, attention green)
and hidden-state kurtosis of D_C (blue) vs D_M (red) by layer."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from thesis.core.plotting import new_figure, save_figure

COLOURS = {"hidden": "tab:red", "mlp": "tab:blue", "attn": "tab:green"}


def probe_and_kurtosis(probe: pd.DataFrame, stats: pd.DataFrame, results: Path, figure_id: str, title: str) -> list[Path]:
    fig, axes = new_figure(width=14, height=4, ncols=3)
    for ax, task in zip(axes, ("conflict", "selection")):
        part = probe[probe.task == task].groupby(["kind", "layer"]).auroc.agg(["mean", "std"]).reset_index()
        for kind, curve in part.groupby("kind"):
            ax.errorbar(curve.layer, curve["mean"], yerr=curve["std"].fillna(0), color=COLOURS.get(kind), label=kind,
                        marker="o", ms=3, capsize=2)
        ax.set(xlabel="layer", ylabel="AUROC", title=f"{task} probe")
        ax.legend()
    kurt = stats[(stats.kind == "hidden") & (stats.statistic == "kurtosis")].groupby("layer")[
        ["mean_context", "mean_memory"]].mean()
    axes[2].plot(kurt.index, kurt.mean_context, "o-", color="tab:blue", label="context used (D_C)")
    axes[2].plot(kurt.index, kurt.mean_memory, "o-", color="tab:red", label="memory used (D_M)")
    axes[2].set(xlabel="layer", ylabel="kurtosis", title="hidden-state kurtosis")
    axes[2].legend()
    fig.suptitle(title)
    return save_figure(fig, results, figure_id)

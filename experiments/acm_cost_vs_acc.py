"""Sec. 3.1 miniature, analogue of thesis Fig. 3.4: accuracy vs FLOPs per sample.

ACM at four budgets, the static-width control, MoEfication at several k, and the dense model,
all from the same base ViT on 16x16 cluttered digits; one panel per recipe that has results
(`acm_mini`, the spec's recipe; `acm_mini_e30`, stage 1 to convergence; `acm_mini_gate_lr`,
stage-3 gates at lr 1e-2). Mean (and std)
over seeds per setting.
"""

from pathlib import Path

import pandas as pd

from thesis.core.plotting import FLOPS_NOTE, new_figure, save_figure

KIND = "figure"
INPUTS = ("acm_mini/cost_vs_acc.csv",)
OPTIONAL = ("acm_mini_e30/cost_vs_acc.csv", "acm_mini_gate_lr/cost_vs_acc.csv")
STYLE = {"acm": ("o-", "ACM (beta_target)"), "acm_static": ("s--", "static width (k learners)"),
         "moefication": ("^-.", "MoEfication (top-k experts)"), "acm_stage1": ("x:", "ACM after stage 1 (k learners)"),
         "dense": ("*", "dense ViT")}


def _panel(ax, rows: pd.DataFrame, title: str) -> None:
    for method, (marker, label) in STYLE.items():
        part = rows[rows.method == method]
        if part.empty:
            continue
        stats = part.groupby("setting").agg(flops=("flops", "mean"), acc=("accuracy", "mean"),
                                            acc_std=("accuracy", "std")).sort_values("flops")
        ax.errorbar(stats.flops / 1e6, 100 * stats.acc, yerr=100 * stats.acc_std.fillna(0), fmt=marker,
                    ms=8 if method == "dense" else 4, capsize=2, label=label)
    ax.set_xlabel(f"MFLOPs per sample ({FLOPS_NOTE})")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{title} ({rows.seed.nunique()} seed(s))")


def render(results: Path) -> list[Path]:
    files = [name for name in INPUTS + OPTIONAL if (results / name).is_file()]
    fig, axes = new_figure(5.0 * len(files), 3.8)
    axes = list(axes) if len(files) > 1 else [axes]
    for ax, name in zip(axes, files):
        _panel(ax, pd.read_csv(results / name), name.split("/")[0])
    axes[0].legend(frameon=False, loc="center right", fontsize=7)
    return save_figure(fig, results, "acm_cost_vs_acc")

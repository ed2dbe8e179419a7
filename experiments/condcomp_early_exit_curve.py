"""Chapter 2 miniature: accuracy vs compute of confidence-based early exits (eqs. 2.13-2.15).

Each threshold on the max-probability of an exit head gives one (mean FLOPs, accuracy) point;
the single exits (always leave at head i) and the dense MLP are drawn for reference. Mean and
standard deviation over seeds.
"""

from pathlib import Path

import pandas as pd

from thesis.core.plotting import FLOPS_NOTE, new_figure, save_figure

KIND = "figure"
INPUTS = ("condcomp_mini/early_exit_curve.csv", "condcomp_mini/runs.csv")


def render(results: Path) -> list[Path]:
    curve = pd.read_csv(results / INPUTS[0])
    runs = pd.read_csv(results / INPUTS[1])
    fig, ax = new_figure()
    for policy, marker in (("confidence", "o-"), ("static", "s--")):
        part = curve[curve.policy == policy]
        stats = part.groupby("setting").agg(
            flops=("flops_fraction", "mean"), acc=("accuracy", "mean"), acc_std=("accuracy", "std")
        ).sort_values("flops")
        ax.errorbar(stats.flops, 100 * stats.acc, yerr=100 * stats.acc_std.fillna(0), fmt=marker,
                    ms=4, capsize=2, label="confidence threshold" if policy == "confidence" else "fixed exit")
    dense = 100 * runs["dense/test_acc"]
    ax.axhline(dense.mean(), color="gray", lw=1, ls=":", label=f"dense MLP ({dense.mean():.1f}%)")
    ax.set_xlabel(f"mean FLOPs / full-depth FLOPs ({FLOPS_NOTE})")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"Early exits on cluttered digits ({runs.seed.nunique()} seeds)")
    ax.legend(frameon=False, loc="lower right")
    return save_figure(fig, results, "condcomp_early_exit_curve")

"""Chapter 2 miniature: expert load of a token-choice top-1 MoE with and without balancing.

Fraction of test tokens routed to each expert, experts ranked by load within each run (expert
identities are arbitrary across seeds), for the Switch-style auxiliary loss switched off
(coefficient 0) and on; the dashed line is the uniform load 1/n. Mean and std over seeds.
"""

from pathlib import Path

import numpy as np
import pandas as pd

from thesis.core.plotting import new_figure, save_figure

KIND = "figure"
INPUTS = ("condcomp_mini/expert_load.csv",)


def render(results: Path) -> list[Path]:
    load = pd.read_csv(results / INPUTS[0])
    load["rank"] = load.groupby(["run", "balance_coef"]).load.rank(ascending=False, method="first").astype(int)
    stats = load.groupby(["balance_coef", "rank"]).load.agg(["mean", "std"]).reset_index()
    coefs = sorted(stats.balance_coef.unique())
    experts = sorted(stats["rank"].unique())
    width = 0.8 / len(coefs)
    fig, ax = new_figure()
    for i, coef in enumerate(coefs):
        part = stats[stats.balance_coef == coef].set_index("rank").loc[experts]
        ax.bar(np.arange(len(experts)) + (i - (len(coefs) - 1) / 2) * width, part["mean"], width,
               yerr=part["std"].fillna(0), capsize=2, label=f"balancing coefficient {coef:g}")
    ax.axhline(1 / len(experts), color="gray", ls="--", lw=1, label="uniform")
    ax.set_xticks(range(len(experts)), [str(e) for e in experts])
    ax.set_xlabel("expert, ranked by load")
    ax.set_ylabel("fraction of test tokens")
    ax.set_title(f"Expert load, top-1 token choice ({load.seed.nunique()} seeds)")
    ax.legend(frameon=False)
    return save_figure(fig, results, "condcomp_expert_load")

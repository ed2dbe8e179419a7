"""Sec. 3.1, analogue of thesis Fig. 3.9: how the auxiliary losses spread compute.

Histograms of per-token compute (left: the fraction of the ACMs' learner cost each test token
used) and per-image compute (right: its mean over the image's tokens) after stage 3 at
beta_target 0.6, one line per set of auxiliary losses of `acm_mini_ablation`, counts summed over
seeds and shown as shares.
"""

from pathlib import Path

import pandas as pd

from thesis.core.plotting import new_figure, save_figure

KIND = "figure"
INPUTS = ("acm_mini_ablation/compute_histograms.csv",)
ORDER = ("L_b", "L_b+L_d", "L_b+L_e", "L_b+L_e+L_d")


def render(results: Path) -> list[Path]:
    table = pd.read_csv(results / INPUTS[0])
    variants = [v for v in ORDER if v in set(table.losses)] + sorted(set(table.losses) - set(ORDER))
    fig, axes = new_figure(9.0, 3.2, ncols=2)
    for ax, level, label in zip(axes, ("token", "image"), ("per-token compute", "per-image compute")):
        part = table[table.level == level]
        for variant in variants:
            counts = part[part.losses == variant].groupby(["bin_low", "bin_high"])["count"].sum().reset_index()
            shares = counts["count"] / counts["count"].sum()
            ax.stairs(shares, [*counts.bin_low, counts.bin_high.iloc[-1]], label=variant, linewidth=1.4)
        ax.set_xlabel(f"{label} (fraction of learner cost)")
        ax.set_ylabel("share")
        ax.set_xlim(0, 1)
    axes[0].legend(title=f"beta_target {table.beta_target.iloc[0]:g}", fontsize=7, title_fontsize=7)
    return save_figure(fig, results, "acm_compute_histograms")

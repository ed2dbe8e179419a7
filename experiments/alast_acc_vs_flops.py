"""Sec. 3.2 miniature, analogue of thesis Fig. 3.19 (left) and Tables 3.2-3.4: accuracy vs training FLOPs.

Every method of `alast_mini` fine-tuning the same pre-trained 12-block ViT on the target digits;
training FLOPs are those of the steps as they ran (frozen blocks, dropped tokens). Mean and std over seeds.
"""

from pathlib import Path

import pandas as pd

from thesis.alast.figures import cost_panel
from thesis.core.plotting import FLOPS_NOTE, new_figure, save_figure

KIND = "figure"
INPUTS = ("alast_mini/cost_vs_acc.csv",)


def render(results: Path) -> list[Path]:
    fig, ax = new_figure(5.5, 3.8)
    cost_panel(ax, pd.read_csv(results / INPUTS[0]), "train_flops", 1e12, f"training TFLOPs ({FLOPS_NOTE})")
    ax.legend(frameon=False, fontsize=7)
    return save_figure(fig, results, "alast_acc_vs_flops")

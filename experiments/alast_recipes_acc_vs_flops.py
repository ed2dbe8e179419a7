"""Sec. 3.2 miniature, both recipes: accuracy vs training FLOPs of every method of recipe 1
(`alast_mini`) with ALaST and LoRA + ALaST of recipe 2 (`alast_mini_r2`: keeps against the original
token count, budget floor 0.65) beside them; the other methods of recipe 2 rerun recipe 1's."""

from pathlib import Path

import pandas as pd

from thesis.alast.figures import cost_panel
from thesis.core.plotting import FLOPS_NOTE, new_figure, save_figure

KIND = "figure"
INPUTS = ("alast_mini/cost_vs_acc.csv", "alast_mini_r2/cost_vs_acc.csv")
RECIPE_2_METHODS = {"alast": "alast_r2", "lora_alast": "lora_alast_r2"}


def render(results: Path) -> list[Path]:
    first, second = (pd.read_csv(results / name) for name in INPUTS)
    second = second[second.method.isin(RECIPE_2_METHODS)].assign(method=lambda t: t.method.map(RECIPE_2_METHODS))
    rows = pd.concat([first[first.seed.isin(second.seed)], second], ignore_index=True)
    fig, ax = new_figure(5.5, 3.8)
    cost_panel(ax, rows, "train_flops", 1e12, f"training TFLOPs ({FLOPS_NOTE})", title="alast_mini, recipes 1 and 2")
    ax.legend(frameon=False, fontsize=7)
    return save_figure(fig, results, "alast_recipes_acc_vs_flops")

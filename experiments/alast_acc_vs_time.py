"""Sec. 3.2 miniature, analogue of thesis Fig. 3.18 and the T columns: accuracy vs training time.

Wall clock of the training steps only (no data loading, evaluation or FLOP counting) of every
`alast_mini` method; on a shared CPU the times are noisy, so read them beside the FLOPs figure.
"""

from pathlib import Path

import pandas as pd

from thesis.alast.figures import cost_panel
from thesis.core.plotting import new_figure, save_figure

KIND = "figure"
INPUTS = ("alast_mini/cost_vs_acc.csv",)


def render(results: Path) -> list[Path]:
    rows = pd.read_csv(results / INPUTS[0])
    fig, ax = new_figure(5.5, 3.8)
    cost_panel(ax, rows, "train_s", 1.0, f"training time (s, {rows.memory_kind.iloc[0].replace('_', ' ')} run)")
    ax.legend(frameon=False, fontsize=7)
    return save_figure(fig, results, "alast_acc_vs_time")

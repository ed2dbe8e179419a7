"""Sec. 5.2, analogue of thesis Fig. 5.27: how many nodes of each type each expert receives.

Routing counts (top-k memberships) of the MGT's two MoE layers on the test split of the first seed,
one panel per layer and run kind: the miniature (`moegt_mini`) and, where they were run, its
controls without the missing-value flags and positional codes (`moegt_mini_control`) and without
the load-balancing loss (`moegt_mini_noload`). One seed, because experts are numbered arbitrarily in
each training: expert 1 of one seed has nothing to do with expert 1 of another, so counts summed over
seeds would mix unrelated experts.
"""

from pathlib import Path

import numpy as np
import pandas as pd

from thesis.core.plotting import new_figure, save_figure

KIND = "figure"
INPUTS = ("moegt_mini/mgt_routing.csv",)
CONTROLS = {"moegt_mini": "miniature", "moegt_mini_control": "no flags / PE",
            "moegt_mini_noload": "w_load = 0"}
NODES = ("j1", "j2", "j3", "b1", "b2", "lepton", "energy")


def render(results: Path) -> list[Path]:
    tables = {name: pd.read_csv(results / name / "mgt_routing.csv") for name in CONTROLS
              if (results / name / "mgt_routing.csv").is_file()}
    layers = sorted(tables["moegt_mini"].layer.unique())
    fig, grid = new_figure(4.2 * len(layers), 2.8 * len(tables), ncols=len(layers), nrows=len(tables))
    for row, (name, table) in enumerate(tables.items()):
        table = table[table.seed == table.seed.min()]
        experts = sorted(table.expert.unique())
        width = 0.8 / len(experts)
        for col, layer in enumerate(layers):
            ax = grid[row, col]
            counts = table[table.layer == layer].groupby(["node", "expert"])["count"].sum()
            for i, expert in enumerate(experts):
                heights = [counts.get((node, expert), 0) for node in NODES]
                ax.bar(np.arange(len(NODES)) + (i - (len(experts) - 1) / 2) * width, heights, width,
                       label=f"expert {expert}")
            ax.set_xticks(range(len(NODES)), NODES, fontsize=7)
            ax.set_title(f"{CONTROLS[name]}, MoE layer {layer} (seed {table.seed.min()})", fontsize=8)
            ax.set_ylabel("routed nodes")
    grid[0, -1].legend(fontsize=6, ncols=2, frameon=False)
    return save_figure(fig, results, "moegt_routing")

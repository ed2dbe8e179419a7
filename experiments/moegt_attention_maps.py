"""Sec. 5.2, analogue of thesis Figs. 5.24-5.26: the MGT's mean attention maps on 7-node events.

Rows are query (attending) nodes, columns key (attended) nodes; one map per layer and head, for the
test split and its true positives and true negatives, averaged over events and seeds. As in the
thesis, only weights above the 85th percentile across all maps of a subset are shown (white below).
"""

from pathlib import Path

import numpy as np
import pandas as pd

from thesis.core.plotting import new_figure, save_figure

KIND = "figure"
INPUTS = ("moegt_mini/mgt_attention.csv",)
NODES = ("j1", "j2", "j3", "b1", "b2", "lepton", "energy")
SUBSETS = {"test": "test", "tp": "true positives", "tn": "true negatives"}
PERCENTILE = 85


def render(results: Path) -> list[Path]:
    table = pd.read_csv(results / INPUTS[0])
    table = table[table.nodes == 7]
    maps = table.groupby(["subset", "layer", "head", "query", "key"]).weight.mean()
    panels = sorted({(layer, head) for _, layer, head, _, _ in maps.index})
    fig, grid = new_figure(2.3 * len(panels), 2.3 * len(SUBSETS), ncols=len(panels), nrows=len(SUBSETS))
    for row, (subset, label) in enumerate(SUBSETS.items()):
        if subset not in maps.index.get_level_values("subset"):
            for ax in grid[row]:
                ax.set_axis_off()
            grid[row, 0].set_title(f"{label}: no events", fontsize=7)
            continue
        matrices = {}
        for layer, head in panels:
            part = maps.loc[subset, layer, head]
            matrices[(layer, head)] = np.array([[part.get((q, k), np.nan) for k in NODES] for q in NODES])
        cut = np.nanpercentile(np.stack(list(matrices.values())), PERCENTILE)
        for col, (key, matrix) in enumerate(matrices.items()):
            ax = grid[row, col]
            ax.imshow(np.where(matrix >= cut, matrix, np.nan), cmap="Blues", vmin=0, vmax=np.nanmax(matrix))
            ax.set_xticks(range(len(NODES)), NODES, rotation=90, fontsize=6)
            ax.set_yticks(range(len(NODES)), NODES, fontsize=6)
            ax.set_title(f"{label}: layer {key[0]}, head {key[1]}", fontsize=7)
    return save_figure(fig, results, "moegt_attention_maps")

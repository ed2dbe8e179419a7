"""Sec. 5.5 miniature, analogue of Fig. 5.62: confusion matrices summed over seeds (by-image split, the
thesis's protocol) of the four conditions, and train / test accuracy per epoch (mean over seeds)."""

from pathlib import Path

import numpy as np
import pandas as pd

from thesis.core.plotting import new_figure, save_figure

KIND = "figure"
INPUTS = ("ceramics_mini/confusion.csv", "ceramics_mini/curves.csv")
SPLIT = "image_random_80_20"


def render(results: Path) -> list[Path]:
    confusion = pd.read_csv(results / INPUTS[0])
    curves = pd.read_csv(results / INPUTS[1])
    confusion = confusion[confusion.split == SPLIT]
    curves = curves[curves.split == SPLIT]
    conditions = list(confusion.groupby(["arch", "init"], sort=True).groups)
    classes = sorted(confusion["true"].unique())
    fig, grid = new_figure(3.0 * len(conditions), 6.0, ncols=len(conditions), nrows=2)
    for j, (arch, init) in enumerate(conditions):
        part = confusion[(confusion.arch == arch) & (confusion.init == init)]
        matrix = part.pivot_table(index="true", columns="pred", values="count", aggfunc="sum").reindex(
            index=classes, columns=classes, fill_value=0).to_numpy()
        ax = grid[0, j]
        ax.imshow(matrix, cmap="Blues")
        for r, c in zip(*np.nonzero(matrix)):
            ax.text(c, r, str(int(matrix[r, c])), ha="center", va="center", fontsize=5,
                    color="white" if matrix[r, c] > matrix.max() / 2 else "black")
        ax.set_xticks(range(len(classes)), classes, fontsize=6)
        ax.set_yticks(range(len(classes)), classes, fontsize=6)
        ax.set_title(f"{arch} {init} (seeds summed)", fontsize=7)
        ax.set_xlabel("predicted", fontsize=7)
        ax.set_ylabel("true", fontsize=7)
        line = curves[(curves.arch == arch) & (curves.init == init)].groupby("epoch").mean(numeric_only=True)
        ax = grid[1, j]
        for column, name in (("train_acc", "train"), ("val_acc", "test")):
            if column in line:
                points = line[column].dropna()
                ax.plot(points.index, points.values, marker=".", label=name)
        ax.set_xlabel("epoch", fontsize=7)
        ax.set_ylabel("accuracy", fontsize=7)
        ax.legend(fontsize=6)
    return save_figure(fig, results, "ceramics_mini_confusion")

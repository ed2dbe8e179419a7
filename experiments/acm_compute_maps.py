"""Sec. 3.1 miniature, analogue of thesis Figs. 3.2 / 3.7: where an ACM model spends compute.

Test images (top) and the fraction of the ACMs' learner cost each 4x4 patch used (bottom), for
the first seed, at each budget listed in the claims (R5).
"""

from pathlib import Path

import numpy as np
import pandas as pd

from thesis.core.plotting import new_figure, save_figure

KIND = "figure"
INPUTS = ("acm_mini/example_maps.csv",)


def _grid(part: pd.DataFrame) -> np.ndarray:
    return part.pivot(index="y", columns="x", values="value").to_numpy()


def render(results: Path) -> list[Path]:
    maps = pd.read_csv(results / INPUTS[0])
    maps = maps[maps.seed == maps.seed.min()]
    betas = sorted(maps.beta_target.unique())
    samples = sorted(maps["sample"].unique())
    fig, axes = new_figure(1.1 * len(samples), 1.2 * (1 + len(betas)))
    axes.remove()
    grid = fig.subplots(1 + len(betas), len(samples), squeeze=False)
    first = maps[maps.beta_target == betas[0]]
    for j, s in enumerate(samples):
        image = first[(first["sample"] == s) & (first.kind == "image")]
        grid[0, j].imshow(_grid(image), cmap="gray", vmin=0, vmax=1)
        grid[0, j].set_title(f"label {image.label.iloc[0]}", fontsize=7)
        for i, beta in enumerate(betas, start=1):
            part = maps[(maps.beta_target == beta) & (maps["sample"] == s) & (maps.kind == "compute")]
            shown = grid[i, j].imshow(_grid(part), cmap="magma", vmin=0, vmax=1)
            if j == 0:
                grid[i, j].set_ylabel(f"beta {beta:g}", fontsize=7)
    for ax in grid.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(shown, ax=grid[1:, :], shrink=0.8, label="compute fraction")
    return save_figure(fig, results, "acm_compute_maps")

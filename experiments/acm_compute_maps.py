"""Sec. 3.1 miniature, analogue of thesis Figs. 3.2 / 3.7: where an ACM model spends compute.

Test images (top) and the fraction of the ACMs' learner cost each 4x4 patch used (bottom), for
the first seed, at each budget listed in the claims (R5); one figure per recipe with results
(`acm_compute_maps` for `acm_mini`, `acm_compute_maps_e30` for `acm_mini_e30`,
`acm_compute_maps_gate_lr` for `acm_mini_gate_lr`).
"""

from pathlib import Path

import numpy as np
import pandas as pd

from thesis.core.plotting import new_figure, save_figure

KIND = "figure"
INPUTS = ("acm_mini/example_maps.csv",)
OPTIONAL = ("acm_mini_e30/example_maps.csv", "acm_mini_gate_lr/example_maps.csv")


def _grid(part: pd.DataFrame) -> np.ndarray:
    return part.pivot(index="y", columns="x", values="value").to_numpy()


def render(results: Path) -> list[Path]:
    written = []
    for name, figure_id in zip(INPUTS + OPTIONAL, ("acm_compute_maps", "acm_compute_maps_e30", "acm_compute_maps_gate_lr")):
        if (results / name).is_file():
            written += _render_one(pd.read_csv(results / name), results, figure_id)
    return written


def _render_one(maps: pd.DataFrame, results: Path, figure_id: str) -> list[Path]:
    maps = maps[maps.seed == maps.seed.min()]
    betas = sorted(maps.beta_target.unique())
    samples = sorted(maps["sample"].unique())
    fig, grid = new_figure(1.1 * len(samples), 1.2 * (1 + len(betas)), ncols=len(samples), nrows=1 + len(betas))
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
    return save_figure(fig, results, figure_id)

"""Sec. 3.1, analogue of thesis Fig. 3.6: how many learners each token needs after stage 1.

One heatmap per recorded module: every test token of the sample (rows, sorted by mean error)
against the number of learners n (columns), coloured by the squared error ||h(z, n) - o||^2 of
the distilled ACM against the module it replaced; the title gives the share of tokens whose error
with 2 learners is within 2x the error with all of them (claim R7 of spec D.b). First run of the
first seed; one figure per recipe with results (`acm_distill_errors` for `acm_mini_ablation`,
`acm_distill_errors_vitb` for `acm_vitb` run with `method.analysis.distill_errors=true`).
"""

import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from matplotlib.colors import LogNorm

from thesis.acm.analysis import tokens_by_mean_error
from thesis.core.plotting import new_figure, save_figure

KIND = "figure"
INPUTS = ("acm_mini_ablation/distill_errors.csv",)
OPTIONAL = ("acm_vitb/distill_errors.csv",)
COLUMNS = 4


def render(results: Path) -> list[Path]:
    written = []
    for name, figure_id in zip(INPUTS + OPTIONAL, ("acm_distill_errors", "acm_distill_errors_vitb")):
        if (results / name).is_file():
            written += _render_one(pd.read_csv(results / name), results, figure_id)
    return written


def _sorted_tokens(part: pd.DataFrame) -> np.ndarray:
    """(tokens, N) errors of one module, tokens ordered by mean error, lowest first."""
    table = part.pivot_table(index=["sample", "token"], columns="learners", values="squared_error")
    return tokens_by_mean_error(torch.tensor(table.to_numpy())).numpy()


def _render_one(errors: pd.DataFrame, results: Path, figure_id: str) -> list[Path]:
    errors = errors[errors.seed == errors.seed.min()]
    errors = errors[errors.run == errors.run.min()]
    modules = list(dict.fromkeys(errors.module))
    ncols = min(COLUMNS, len(modules))
    nrows = math.ceil(len(modules) / ncols)
    fig, grid = new_figure(2.2 * ncols + 1.0, 2.6 * nrows, ncols=ncols, nrows=nrows)
    positive = errors.squared_error[errors.squared_error > 0]
    norm = LogNorm(vmin=max(positive.min(), positive.max() * 1e-6), vmax=positive.max(), clip=True)
    for ax, module in zip(grid.flat, modules):
        values = _sorted_tokens(errors[errors.module == module])
        shown = ax.imshow(values, aspect="auto", interpolation="nearest", cmap="viridis", norm=norm,
                          extent=(0.5, values.shape[1] + 0.5, len(values), 0))
        close = float(np.mean(values[:, 1] <= 2 * values[:, -1])) if values.shape[1] >= 2 else float("nan")
        ax.set_title(f"{module}\nn=2 within 2x of n={values.shape[1]}: {100 * close:.0f}% of tokens", fontsize=7)
        ax.set_xticks(range(1, values.shape[1] + 1))
        ax.set_xlabel("learners n", fontsize=7)
        ax.set_ylabel("tokens, by mean error", fontsize=7)
    for ax in grid.flat[len(modules):]:
        ax.remove()
    fig.colorbar(shown, ax=grid, shrink=0.8, label=r"squared error $\|h(z, n) - o\|^2$")
    return save_figure(fig, results, figure_id)

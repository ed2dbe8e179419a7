"""Sec. 3.2 miniature, analogue of thesis Figs. 3.20-3.21: ALaST's per-layer budgets during fine-tuning.

Left: budget of every layer over the training steps (first seed, method `alast`); right: the
final budget per layer, mean over seeds, for ALaST and LoRA + ALaST.
"""

from pathlib import Path

import pandas as pd

from thesis.core.plotting import new_figure, save_figure

KIND = "figure"
INPUTS = ("alast_mini/budget_trace.csv",)
METHODS = ("alast", "lora_alast")


def render(results: Path) -> list[Path]:
    trace = pd.read_csv(results / INPUTS[0])
    trace = trace[trace.method.isin(METHODS)]
    fig, (left, right) = new_figure(10.0, 3.8)
    first = trace[(trace.method == "alast") & (trace.seed == trace.seed.min())]
    grid = first.pivot(index="layer", columns="step", values="budget")
    image = left.imshow(grid.values, aspect="auto", origin="lower", vmin=0, vmax=1, cmap="viridis",
                        extent=(grid.columns.min(), grid.columns.max(), -0.5, len(grid) - 0.5))
    fig.colorbar(image, ax=left, label="budget b_l")
    left.set_xlabel("fine-tuning step")
    left.set_ylabel("layer")
    left.set_title("ALaST budgets (first seed)")
    last = trace[trace.step == trace.groupby(["method", "seed"]).step.transform("max")]
    for offset, (method, part) in enumerate(last.groupby("method", sort=False)):
        final = part.groupby("layer").budget.agg(["mean", "std"]).fillna(0.0)
        right.bar(final.index + 0.4 * offset - 0.2, final["mean"], width=0.4, yerr=final["std"], label=method)
    right.set_xlabel("layer")
    right.set_ylabel("final budget")
    right.set_ylim(0, 1.05)
    right.legend(frameon=False, fontsize=7)
    return save_figure(fig, results, "alast_budget_trace")

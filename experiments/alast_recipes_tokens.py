"""Sec. 3.2 miniature, both recipes: what ALaST's budgets do to the tokens. Left: final budget per layer;
right: patch tokens leaving each layer, averaged over the fine-tuning steps; recipe 1 (`alast_mini`,
compounding keeps, floor 0.25) against recipe 2 (`alast_mini_r2`, keeps against the original count,
floor 0.65). First seed of each."""

from pathlib import Path

import pandas as pd

from thesis.core.plotting import new_figure, save_figure

KIND = "figure"
INPUTS = ("alast_mini/budget_trace.csv", "alast_mini_r2/budget_trace.csv")
RECIPES = ("recipe 1", "recipe 2")


def render(results: Path) -> list[Path]:
    fig, (budgets, tokens) = new_figure(10.0, 3.6)
    for offset, (name, recipe) in enumerate(zip(INPUTS, RECIPES)):
        trace = pd.read_csv(results / name)
        trace = trace[(trace.method == "alast") & (trace.seed == trace.seed.min())]
        final = trace[trace.step == trace.step.max()].sort_values("layer")
        budgets.bar(final.layer + 0.4 * offset - 0.2, final.budget, width=0.4, label=recipe)
        kept = trace.groupby("layer").tokens_out.mean() - 1  # the class token is always kept
        tokens.plot(kept.index, kept.values, marker="o", label=recipe)
    budgets.set_xlabel("layer")
    budgets.set_ylabel("final budget b_l")
    budgets.set_ylim(0, 1.05)
    budgets.legend(frameon=False, fontsize=7)
    tokens.set_xlabel("layer")
    tokens.set_ylabel("patch tokens after the layer (mean over steps)")
    tokens.set_ylim(bottom=0)
    tokens.legend(frameon=False, fontsize=7)
    return save_figure(fig, results, "alast_recipes_tokens")

"""Sec. 5.4 miniature, the Table 5.8 analogue as a figure: held-out exact match of each trained model as
its top-K attention sinks are masked (K = 0, 1, 5, 10), one panel per task; binomial standard errors
with hits and n pooled over seeds. The random-init controls score 0 unmasked and are left out."""

from pathlib import Path

import numpy as np
import pandas as pd

from thesis.core.plotting import new_figure, save_figure

KIND = "figure"
INPUTS = ("sinks_mini/accuracy.csv",)
LABELS = {"llada": "LLaDA-style DLM", "dream": "Dream-style DLM", "arm": "autoregressive (ARM)"}


def render(results: Path) -> list[Path]:
    accuracy = pd.read_csv(results / INPUTS[0])
    accuracy = accuracy[accuracy.model.isin(LABELS)]
    pooled = accuracy.groupby(["task", "model", "topk"])[["hits", "n"]].sum().reset_index()
    pooled["p"] = pooled.hits / pooled.n
    pooled["stderr"] = np.sqrt(pooled.p * (1 - pooled.p) / pooled.n)
    tasks = sorted(pooled.task.unique())
    fig, axes = new_figure(4.2 * len(tasks), 3.4, ncols=len(tasks))
    for ax, task in zip(np.atleast_1d(axes), tasks):
        for model, label in LABELS.items():
            part = pooled[(pooled.task == task) & (pooled.model == model)].sort_values("topk")
            ax.errorbar([str(k) for k in part.topk], 100 * part.p, yerr=100 * part.stderr, marker="o", capsize=2,
                        label=label)
        ax.set_title(f"task {task} ({accuracy.seed.nunique()} seed(s) pooled)")
        ax.set_xlabel("top-K sinks masked")
        ax.set_ylabel("held-out exact match (%)")
        ax.set_ylim(bottom=0)
    np.atleast_1d(axes)[0].legend(frameon=False, fontsize=7)
    return save_figure(fig, results, "sinks_mini_masking")

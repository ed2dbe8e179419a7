"""Figures a kv_mini run writes into `<run>/figures/` (PNG + PDF): the correlation histogram (Figs. 4.1,
4.40, 4.50 analogues), perplexity against the budget (Figs. 4.3, 4.31a) and retrieval accuracy against
the compression ratio (Figs. 4.4, 4.43)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from thesis.core.plotting import new_figure, save_figure


def correlation_histogram(heads: pd.DataFrame, out: Path) -> None:
    fig, ax = new_figure(5.0, 3.4)
    for column, label in (("rho_knorm", "-||k|| (KNorm)"), ("rho_qfilters", "<k, v1+> (Q-Filters)"), ("rho_ea", "EA logit")):
        ax.hist(heads[column], bins=20, range=(-1, 1), alpha=0.5, label=label)
    ax.set_xlabel("Spearman rho with attention received, per (layer, head)")
    ax.set_ylabel("heads")
    ax.legend()
    save_figure(fig, out, "kv_mini_correlation")


def ppl_vs_budget(streaming: pd.DataFrame, out: Path) -> None:
    fig, ax = new_figure(5.0, 3.4)
    budget = streaming[(streaming.protocol == "budget") & (streaming.window == 0)]
    for method, part in budget.groupby("method"):
        part = part.sort_values("budget")
        ax.plot(part.budget, part.ppl_beyond_budget, marker="o", label=method)
    if len(budget):
        full = budget.sort_values("budget")
        ax.plot(full.budget, full.full_ppl_beyond_budget, "k--", label="full cache")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("cache budget B (pairs per head)")
    ax.set_ylabel("perplexity beyond B")
    ax.legend(fontsize=7)
    save_figure(fig, out, "kv_mini_ppl_vs_budget")


def accuracy_vs_ratio(retrieval: pd.DataFrame, out: Path) -> None:
    fig, axes = new_figure(10.0, 3.4, ncols=2)
    agnostic = retrieval[~retrieval.query_aware]
    for ax, task in zip(axes, ("passkey", "niah")):
        part = agnostic[agnostic.task == task]
        full = part[part.method == "full"].accuracy
        for method, rows in part[part.method != "full"].groupby("method"):
            rows = rows.sort_values("ratio")
            ax.plot(rows.ratio, rows.accuracy, marker="o", label=method)
        if len(full):
            ax.axhline(float(full.iloc[0]), color="k", linestyle="--", label="full cache")
        ax.set_title(task)
        ax.set_xlabel("compression ratio r (fraction evicted)")
        ax.set_ylabel("exact-match accuracy")
        ax.set_ylim(-0.02, 1.02)
    axes[0].legend(fontsize=7)
    save_figure(fig, out, "kv_mini_accuracy_vs_ratio")

"""Section 5.3 analyses on captured last-position activations, shared by the paper-scale runner and
the miniature: the conflict-detection probe (D^{e_C} vs D^{e_M}, question-disjoint, paired balanced
training set, spec B.3), the knowledge-selection probe (D_{a_C} vs D_{a_M} among conflict inputs)
and the distribution statistics of D_{a_C} vs D_{a_M} per layer and kind (spec B.4)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from thesis.spare.probe import ProbeConfig, group_split, probe_layers
from thesis.spare.stats import STATISTICS, compare_groups, statistics

Features = dict[tuple[str, int], np.ndarray]


def conflict_probe(conflict: Features, no_conflict: Features, groups: list[str], n_test_groups: int,
                   config: ProbeConfig, seeds: list[int], split_seed: int = 666) -> list[dict]:
    """Rows i of both feature sets belong to question `groups[i]`. Train: one row per train group,
    its conflict (1) and no-conflict (0) activation. Test: every conflict row of a test group and
    one no-conflict row per test group."""
    train_rows, test_rows = group_split(list(groups), n_test_groups, split_seed)
    first = {}
    for i, g in enumerate(groups):
        first.setdefault(g, i)
    first_rows = np.zeros(len(groups), bool)
    first_rows[list(first.values())] = True
    train_idx = np.flatnonzero(train_rows & first_rows)
    test_c, test_m = np.flatnonzero(test_rows), np.flatnonzero(test_rows & first_rows)
    features = {key: np.vstack([conflict[key][train_idx], no_conflict[key][train_idx], conflict[key][test_c],
                                no_conflict[key][test_m]]) for key in conflict}
    y = np.r_[np.ones(len(train_idx)), np.zeros(len(train_idx)), np.ones(len(test_c)), np.zeros(len(test_m))]
    n_train = 2 * len(train_idx)
    train = np.arange(len(y)) < n_train
    return [{"task": "conflict", **row} for row in probe_layers(features, y, train, ~train, config, seeds)]


def selection_probe(conflict: Features, label: np.ndarray, groups: list[str], n_test_groups: int,
                    config: ProbeConfig, seeds: list[int], split_seed: int = 666) -> list[dict]:
    """Context (1) vs memory (0) answers among conflict inputs; rows with neither are dropped."""
    keep = label >= 0
    kept_groups = [g for g, k in zip(groups, keep) if k]
    train, test = group_split(kept_groups, n_test_groups, split_seed)
    features = {key: value[keep] for key, value in conflict.items()}
    return [{"task": "selection", **row}
            for row in probe_layers(features, label[keep], train, test, config, seeds)]


def group_statistics(conflict: Features, label: np.ndarray) -> list[dict]:
    """Per (kind, layer, statistic): mean over D_{a_C} (label 1) and D_{a_M} (label 0), Welch t, p."""
    rows = []
    for (kind, layer), value in sorted(conflict.items()):
        stats = statistics(value)
        for name in STATISTICS:
            compared = compare_groups(stats[name][label == 1], stats[name][label == 0])
            rows.append({"kind": kind, "layer": layer, "statistic": name, "mean_context": compared["mean_a"],
                         "mean_memory": compared["mean_b"], "t": compared["t"], "p": compared["p"],
                         "effect_size": compared["effect_size"]})
    return rows


def probe_summary(rows: list[dict]) -> pd.DataFrame:
    """Mean and std over probe seeds per (task, kind, layer)."""
    frame = pd.DataFrame(rows)
    return frame.groupby(["task", "kind", "layer"])[["accuracy", "auroc", "auprc"]].agg(["mean", "std"]).reset_index()


def plot_probe_curves(rows: list[dict], path_stem, title: str) -> None:
    """Accuracy / AUROC / AUPRC by layer for hidden (red), mlp (blue), attn (green), per task."""
    from thesis.core.plotting import new_figure, plt

    frame = pd.DataFrame(rows)
    colours = {"hidden": "tab:red", "mlp": "tab:blue", "attn": "tab:green"}
    for task, part in frame.groupby("task"):
        fig, axes = new_figure(width=12, height=3.2, ncols=3)
        for ax, metric in zip(axes, ("accuracy", "auroc", "auprc")):
            stats = part.groupby(["kind", "layer"])[metric].agg(["mean", "std"]).reset_index()
            for kind, curve in stats.groupby("kind"):
                ax.errorbar(curve.layer, curve["mean"], yerr=curve["std"].fillna(0), label=kind,
                            color=colours.get(kind), marker="o", ms=3, capsize=2)
            ax.set_xlabel("layer")
            ax.set_ylabel(metric)
        axes[0].legend()
        fig.suptitle(f"{title}: {task} probe")
        path = path_stem.parent / f"{path_stem.name}_{task}"
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(f"{path}.png", dpi=130)
        plt.close(fig)


def plot_statistics(rows: list[dict], path_stem, title: str, kind: str = "hidden") -> None:
    """Kurtosis / Hoyer / Gini / L1 / L2 by layer, D_{a_C} (blue) vs D_{a_M} (red)."""
    from thesis.core.plotting import new_figure, plt

    frame = pd.DataFrame(rows)
    frame = frame[frame.kind == kind]
    fig, axes = new_figure(width=15, height=3, ncols=5)
    for ax, name in zip(axes, STATISTICS):
        part = frame[frame.statistic == name]
        ax.plot(part.layer, part.mean_context, "o-", color="tab:blue", label="context used", ms=3)
        ax.plot(part.layer, part.mean_memory, "o-", color="tab:red", label="memory used", ms=3)
        ax.set_title(name)
        ax.set_xlabel("layer")
    axes[0].legend()
    fig.suptitle(f"{title} ({kind})")
    path_stem.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(f"{path_stem}.png", dpi=130)
    plt.close(fig)

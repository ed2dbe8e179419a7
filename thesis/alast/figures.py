"""Shared drawing for the ALaST recipes in experiments/: one point per method, mean and std over seeds."""

from __future__ import annotations

import pandas as pd
from matplotlib import colormaps

#: marker and label per method name of `alast_mini` (others get a plain dot and their own name)
STYLE = {
    "ft_head": ("v", "FT head"), "ft_full": ("s", "FT full"), "ft_top3": ("^", "FT top-3 (static layers)"),
    "token_drop": ("<", "token dropping (no layer selection)"), "bsr": (">", "BSR"), "lora": ("D", "LoRA"),
    "alast": ("*", "ALaST"), "alast_faithful": ("P", "ALaST, literal rule"),
    "alast_random_k": ("x", "random K layers (ablation)"), "lora_alast": ("X", "LoRA + ALaST"),
    "tome": ("h", "ToMe"),
    "alast_r2": ("*", "ALaST, recipe 2"), "lora_alast_r2": ("X", "LoRA + ALaST, recipe 2"),
}


def per_method(rows: pd.DataFrame, cost: str) -> pd.DataFrame:
    """Mean and std over seeds of accuracy and `cost`, one row per method."""
    return rows.groupby("method", sort=False).agg(cost=(cost, "mean"), cost_std=(cost, "std"),
                                                  acc=("accuracy", "mean"), acc_std=("accuracy", "std")).fillna(0.0)


def cost_panel(ax, rows: pd.DataFrame, cost: str, scale: float, xlabel: str, title: str = "alast_mini") -> None:
    """Accuracy (%) against `cost` / `scale`, one marker per method, error bars over seeds."""
    colours = colormaps["tab20"].colors  # more methods than the default cycle's 10 colours
    for index, (method, point) in enumerate(per_method(rows, cost).iterrows()):
        marker, label = STYLE.get(method, ("o", method))
        ax.errorbar(point.cost / scale, 100 * point.acc, xerr=point.cost_std / scale, yerr=100 * point.acc_std,
                    fmt=marker, ms=9 if method in ("alast", "alast_r2") else 6, capsize=2, label=label,
                    color=colours[2 * index % 20 + (2 * index // 20)])
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{title} ({rows.seed.nunique()} seed(s))")

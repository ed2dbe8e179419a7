"""Figs. 5.31-5.33 analogues of `resid_probe_mini`: conflict and selection probe AUROC by layer for
hidden / mlp / attn, and hidden-state kurtosis of D_C vs D_M by layer, over seeds."""

from pathlib import Path

import pandas as pd

from thesis.spare.figures import probe_and_kurtosis

KIND = "figure"
INPUTS = ("resid_probe_mini/probe.csv", "resid_probe_mini/stats.csv")


def render(results: Path) -> list[Path]:
    probe, stats = (pd.read_csv(results / name) for name in INPUTS)
    return probe_and_kurtosis(probe, stats, results, "resid_probe_mini_curves", "miniature (synthetic world)")

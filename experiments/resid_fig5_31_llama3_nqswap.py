"""Figs. 5.31-5.33 (Section 5.3): conflict-probe and selection-probe AUROC by layer (hidden / MLP /
attention) and hidden-state kurtosis of D_C vs D_M, Llama3-8B on NQSwap (`resid_probe_llama3_nqswap`)."""

from pathlib import Path

import pandas as pd

from thesis.spare.figures import probe_and_kurtosis

KIND = "figure"
INPUTS = ("resid_probe_llama3_nqswap/probe.csv", "resid_probe_llama3_nqswap/stats.csv")


def render(results: Path) -> list[Path]:
    probe, stats = (pd.read_csv(results / name) for name in INPUTS)
    return probe_and_kurtosis(probe, stats, results, "resid_fig5_31_llama3_nqswap", "Llama3-8B, NQSwap")

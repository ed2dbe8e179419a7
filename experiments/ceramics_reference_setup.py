"""Sec. 5.5, Tables 9 and 11-16 as typed from the thesis: sites, architectures, training settings and the
cross-validation grids that the paper-scale configs (configs/experiment/ceramics_*.yaml) follow."""

from pathlib import Path

import pandas as pd

from thesis.core.io import atomic_write_text
from thesis.results import markdown_table

KIND = "table"
INPUTS = ("reference/ceramics_sites.csv", "reference/ceramics_architectures.csv", "reference/ceramics_training.csv",
          "reference/ceramics_cv_grids.csv")
TITLES = ("Table 9: samples per site", "Tables 11 and 14: architectures", "Tables 12 and 15: training settings",
          "Tables 13 and 16: cross-validation grids")


def render(results: Path) -> list[Path]:
    parts = []
    for name, title in zip(INPUTS, TITLES):
        frame = pd.read_csv(results / name, dtype=str).fillna("")
        parts += [f"### {title}", "", markdown_table(frame.drop(columns=["source"])), ""]
    return [atomic_write_text(results / "tables" / "ceramics_reference_setup.md", "\n".join(parts))]

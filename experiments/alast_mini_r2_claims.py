"""Sec. 3.2 miniature, recipe 2 (`alast_mini_r2`): the same pre-registered claims, mean over seeds vs
threshold and verdict."""

from pathlib import Path

import pandas as pd

from thesis.core.io import atomic_write_text
from thesis.results import markdown_table, summarise_claims

KIND = "table"
INPUTS = ("alast_mini_r2/claims.csv",)


def render(results: Path) -> list[Path]:
    claims = pd.read_csv(results / INPUTS[0])
    path = results / "tables" / "alast_mini_r2_claims.md"
    return [atomic_write_text(path, markdown_table(summarise_claims(claims)) + "\n")]

"""Sec. 5.5 miniature: the pre-registered claims of `ceramics_mini`, mean over seeds vs threshold and verdict."""

from pathlib import Path

import pandas as pd

from thesis.core.io import atomic_write_text
from thesis.results import markdown_table, summarise_claims

KIND = "table"
INPUTS = ("ceramics_mini/claims.csv",)


def render(results: Path) -> list[Path]:
    claims = pd.read_csv(results / INPUTS[0])
    path = results / "tables" / "ceramics_mini_claims.md"
    return [atomic_write_text(path, markdown_table(summarise_claims(claims)) + "\n")]

"""Sec. 3.1 miniature: the pre-registered claims R1-R5 (spec ch2_acm D.b), per seed and verdict."""

from pathlib import Path

import pandas as pd

from thesis.core.io import atomic_write_text
from thesis.results import markdown_table, summarise_claims

KIND = "table"
INPUTS = ("acm_mini/claims.csv",)


def render(results: Path) -> list[Path]:
    table = summarise_claims(pd.read_csv(results / INPUTS[0]))
    return [atomic_write_text(results / "tables" / "acm_mini_claims.md", markdown_table(table) + "\n")]

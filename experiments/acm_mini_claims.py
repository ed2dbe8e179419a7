"""Sec. 3.1 miniature: the pre-registered claims R1-R5 (spec ch2_acm D.b), per seed and verdict,
for the spec's recipe (`acm_mini`) and, when run, the second and third recipes (`acm_mini_e30`,
`acm_mini_gate_lr`)."""

from pathlib import Path

import pandas as pd

from thesis.core.io import atomic_write_text
from thesis.results import markdown_table, summarise_claims

KIND = "table"
INPUTS = ("acm_mini/claims.csv",)
OPTIONAL = ("acm_mini_e30/claims.csv", "acm_mini_gate_lr/claims.csv")


def render(results: Path) -> list[Path]:
    files = [name for name in INPUTS + OPTIONAL if (results / name).is_file()]
    table = summarise_claims(pd.concat([pd.read_csv(results / name) for name in files], ignore_index=True))
    return [atomic_write_text(results / "tables" / "acm_mini_claims.md", markdown_table(table) + "\n")]

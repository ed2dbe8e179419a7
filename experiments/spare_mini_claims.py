"""Sections 5.1 / 5.3 miniatures: pre-registered claims of `spare_mini` (C1-C7, C15) and
`resid_probe_mini` (C9-C12), mean over seeds vs the threshold fixed in the method configs."""

from pathlib import Path

import pandas as pd

from thesis.core.io import atomic_write_text
from thesis.results import markdown_table, summarise_claims

KIND = "table"
INPUTS = ("spare_mini/claims.csv", "resid_probe_mini/claims.csv")


def render(results: Path) -> list[Path]:
    claims = pd.concat([pd.read_csv(results / name) for name in INPUTS], ignore_index=True)
    path = results / "tables" / "spare_mini_claims.md"
    return [atomic_write_text(path, markdown_table(summarise_claims(claims)) + "\n")]

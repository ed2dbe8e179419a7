"""Chapter 2 miniature: the pre-registered claims, measured value per seed and verdict.

Both recipes are listed: `condcomp_mini` (cluttered digits, the current recipe) and
`condcomp_mini_digits8` (the first recipe on plain digits, kept as recorded). A claim holds when
it holds for the mean over seeds; the per-seed pass count is shown beside it.
"""

from pathlib import Path

import pandas as pd

from thesis.core.io import atomic_write_text
from thesis.results import markdown_table, summarise_claims

KIND = "table"
INPUTS = ("condcomp_mini/claims.csv", "condcomp_mini_digits8/claims.csv")


def render(results: Path) -> list[Path]:
    claims = pd.concat([pd.read_csv(results / name) for name in INPUTS], ignore_index=True)
    path = results / "tables" / "condcomp_mini_claims.md"
    return [atomic_write_text(path, markdown_table(summarise_claims(claims)) + "\n")]

"""Chapter 4 miniature (spec F.b): the pre-registered claims G0, C1-C6 of `kv_mini_gpu` (kvmini-10m), one
row per claim and criterion, measured value (mean over seeds), threshold and the runs' verdicts
("inconclusive" where a retrieval claim met a failed competence gate G0). Thresholds: configs/method/kv_mini.yaml.
"""

from pathlib import Path

import pandas as pd

from thesis.core.io import atomic_write_text
from thesis.results import markdown_table

KIND = "table"
INPUTS = ("kv_mini_gpu/claims.csv",)


def summary(claims: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for (name, statement, direction, threshold), part in claims.groupby(
            ["claim", "statement", "direction", "threshold"], sort=False):
        verdicts = sorted(set(part.verdict))
        rows.append({"claim": name, "statement": statement, "threshold": f"{direction} {threshold:g}",
                     "measured (mean over seeds)": part.value.mean(), "seeds": len(part),
                     "verdict": verdicts[0] if len(verdicts) == 1 else " / ".join(verdicts)})
    return pd.DataFrame(rows)


def render(results: Path) -> list[Path]:
    claims = pd.read_csv(results / INPUTS[0])
    return [atomic_write_text(results / "tables" / "kv_mini_claims.md", markdown_table(summary(claims)) + "\n")]

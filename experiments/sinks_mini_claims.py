"""Sec. 5.4 miniature: the pre-registered claims (method/sinks_mini.yaml) and the Table 5.8 analogue,
exact match of each trained model under top-K sink masking per task, with binomial standard errors
(pooled over seeds: hits and n summed)."""

from pathlib import Path

import numpy as np
import pandas as pd

from thesis.core.io import atomic_write_text
from thesis.results import markdown_table, summarise_claims

KIND = "table"
INPUTS = ("sinks_mini/claims.csv", "sinks_mini/accuracy.csv")


def masking_table(accuracy: pd.DataFrame) -> pd.DataFrame:
    pooled = accuracy.groupby(["model", "task", "topk"], sort=False)[["hits", "n"]].sum().reset_index()
    pooled["p"] = pooled.hits / pooled.n
    pooled["cell"] = [f"{p:.2f} ± {np.sqrt(p * (1 - p) / n):.2f}" for p, n in zip(pooled.p, pooled.n)]
    table = pooled.pivot(index=["task", "topk"], columns="model", values="cell").reset_index()
    table["topk"] = ["unmasked" if k == 0 else f"masked top-{k}" for k in table.topk]
    return table.rename(columns={"topk": "sinks"})


def render(results: Path) -> list[Path]:
    claims = pd.read_csv(results / "sinks_mini" / "claims.csv")
    accuracy = pd.read_csv(results / "sinks_mini" / "accuracy.csv")
    text = "\n\n".join([markdown_table(summarise_claims(claims)), markdown_table(masking_table(accuracy))])
    return [atomic_write_text(results / "tables" / "sinks_mini_claims.md", text + "\n")]

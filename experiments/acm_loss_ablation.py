"""Sec. 3.1 loss ablation (`acm_mini_ablation`): claims R6 and R7 of spec ch2_acm D.b, fixed before
the run, measured per seed.

R6 (Fig. 3.9): with L_b alone an image's tokens all take about the same number of learners
(mean normalised choice entropy < 0.2) and images barely differ in compute (std of per-image
compute < 0.02); with L_b + L_e + L_d the choices vary within images (entropy > 0.5) and between
them (std at least 2x the L_b-only run). R7 (Fig. 3.6): after stage 1, for at least 60 % of
tokens the squared error with 2 learners is within 2x the error with all 4.
"""

from pathlib import Path

import pandas as pd

from thesis.core.io import atomic_write_text
from thesis.results import markdown_table, summarise_claims

KIND = "table"
INPUTS = ("acm_mini_ablation/runs.csv", "acm_mini_ablation/distill_errors.csv")
BETA = "0.6"
ONLY_BUDGET, ALL_LOSSES = "L_b", "L_b+L_e+L_d"


def _claim(seed: int, name: str, statement: str, value: float, direction: str, threshold: float) -> dict:
    passed = value >= threshold if direction == ">=" else value <= threshold if direction == "<=" else \
        value > threshold if direction == ">" else value < threshold
    return {"experiment": "acm_mini_ablation", "seed": seed, "claim": name, "statement": statement,
            "value": value, "direction": direction, "threshold": threshold, "passed": bool(passed)}


def r6_claims(runs: pd.DataFrame) -> list[dict]:
    rows = []
    entropy, spread = f"acm/beta={BETA}/choice_entropy", f"acm/beta={BETA}/image_compute_std"
    for seed, part in runs.groupby("seed"):
        by_losses = part.set_index("acm/losses")
        if not {ONLY_BUDGET, ALL_LOSSES} <= set(by_losses.index):
            continue
        only, every = by_losses.loc[ONLY_BUDGET], by_losses.loc[ALL_LOSSES]
        rows += [
            _claim(seed, "R6a", "choice entropy per image, L_b only", only[entropy], "<", 0.2),
            _claim(seed, "R6b", "std of per-image compute, L_b only", only[spread], "<", 0.02),
            _claim(seed, "R6c", "choice entropy per image, L_b+L_e+L_d", every[entropy], ">", 0.5),
            _claim(seed, "R6d", "std of per-image compute, L_b+L_e+L_d / L_b only",
                   every[spread] / max(only[spread], 1e-12), ">=", 2.0),
        ]
    return rows


def r7_claims(errors: pd.DataFrame) -> list[dict]:
    rows = []
    for seed, part in errors.groupby("seed"):
        part = part[part.run == part.run.min()]  # stage 1 is shared: one run per seed records its errors
        table = part.pivot_table(index=["module", "sample", "token"], columns="learners", values="squared_error")
        share = float((table[2] <= 2 * table[table.columns.max()]).mean())
        rows.append(_claim(seed, "R7", f"share of tokens with error(n=2) <= 2 x error(n={table.columns.max()})",
                           share, ">=", 0.6))
    return rows


def render(results: Path) -> list[Path]:
    runs = pd.read_csv(results / INPUTS[0])
    errors = pd.read_csv(results / INPUTS[1])
    claims = pd.DataFrame(r6_claims(runs) + r7_claims(errors))
    claims["direction"] = claims.direction.replace({"<": "<=", ">": ">="})  # summarise_claims knows two
    columns = ["acm/losses", f"acm/beta={BETA}/acc", f"acm/beta={BETA}/compute",
               f"acm/beta={BETA}/choice_entropy", f"acm/beta={BETA}/image_compute_std"]
    variants = runs.groupby("acm/losses")[columns[1:]].mean().round(4)
    variants.insert(0, "seeds", runs.groupby("acm/losses").seed.nunique())
    text = ("Per seed, strict inequalities (< 0.2, > 0.5) are checked as written; the summary reads them as <=, >=.\n\n"
            + markdown_table(summarise_claims(claims)) + "\n\nMeans over seeds, per set of auxiliary losses:\n\n"
            + markdown_table(variants.reset_index()) + "\n")
    return [atomic_write_text(results / "tables" / "acm_loss_ablation.md", text)]

"""Sec. 3.3, Table 3.10: controller test accuracy (%) "P - R" per SNR scenario and Gamma_th, the
thesis's numbers beside the reproduced ones (`semcom_lyapunov` paper runs, and the `semcom_mini`
miniature when collected). A cell stays empty until its run has been collected; "-" = failed search.
"""

from pathlib import Path

import pandas as pd

from thesis.core.io import atomic_write_text
from thesis.results import markdown_table

KIND = "table"
INPUTS = ("reference/semcom_table3_10.csv",)
RUNS = {"semcom_lyapunov/controller.csv": "ours", "semcom_mnv3/controller.csv": "ours (with MNV3 CNN)",
        "semcom_mini/controller.csv": "mini"}


def cells(frame: pd.DataFrame, value: str) -> pd.DataFrame:
    """'P - R' strings per (scenario, method, Gamma_th); '-' where a regime has no value."""
    text = frame.assign(v=frame[value].map(lambda x: "-" if pd.isna(x) else f"{x:.2f}"))
    wide = text.pivot_table(index=["snr_scenario", "method", "gamma_th"], columns="regime", values="v", aggfunc="first")
    joined = wide.get("P", "-").fillna("-") + " - " + wide.get("R", "-").fillna("-")
    return joined.replace("- - -", "-").rename(value).reset_index()


def render(results: Path) -> list[Path]:
    reference = pd.read_csv(results / INPUTS[0], dtype={"snr_scenario": str})
    table = cells(reference, "accuracy_pct").rename(columns={"accuracy_pct": "thesis"})
    for path, label in RUNS.items():
        if not (results / path).is_file():
            continue
        runs = pd.read_csv(results / path, dtype={"scenario": str})
        runs = runs.rename(columns={"scenario": "snr_scenario"})
        runs["accuracy_pct"] = 100 * runs["accuracy"].where(runs["feasible"].astype(bool))
        mean = runs.groupby(["snr_scenario", "method", "gamma_th", "regime"], as_index=False)["accuracy_pct"].mean()
        table = table.merge(cells(mean, "accuracy_pct").rename(columns={"accuracy_pct": label}),
                            on=["snr_scenario", "method", "gamma_th"], how="outer")
    header = "Test accuracy (%) P - R (P: noiseless-trained pipelines, R: robust-trained). '-' = no (V, mu) met Gamma_th."
    path = results / "tables" / "semcom_table3_10.md"
    return [atomic_write_text(path, header + "\n\n" + markdown_table(table.fillna("")) + "\n")]

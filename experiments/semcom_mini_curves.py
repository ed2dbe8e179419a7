"""Sec. 3.3 miniature, `semcom_mini`: accuracy against the compression factor rho per test SNR
(Figs. 3.27-3.28 analogue), accuracy / FLOPs gain against the budget alpha (Fig. 3.29 analogue), and
the controller: deployed accuracy per Gamma_th (Fig. 3.30 analogue) with the running-average rho and
the virtual queue over time, from the collected CSVs (seeds pooled; the trace of the first seed)."""

import shutil
import tempfile
from pathlib import Path

import pandas as pd

from thesis.semcom import figures

KIND = "figure"
INPUTS = ("semcom_mini/curves.csv", "semcom_mini/digital.csv", "semcom_mini/flops_gain.csv",
          "semcom_mini/controller.csv", "semcom_mini/controller_trace.csv")
NAMES = {"semcom_accuracy_vs_rho": "semcom_mini_accuracy_vs_rho", "semcom_flops_gain": "semcom_mini_flops_gain",
         "semcom_controller_accuracy": "semcom_mini_controller_accuracy",
         "semcom_controller_queue": "semcom_mini_controller_queue"}


def render(results: Path) -> list[Path]:
    curves, digital, gain, control, trace = (pd.read_csv(results / name) for name in INPUTS)
    digital = digital.groupby(["scheme", "snr_db", "rho"], as_index=False)["accuracy"].mean()
    gain = gain.groupby(["lambda_s", "alpha"], as_index=False)[["accuracy", "flops_gain"]].mean()
    control = control.groupby(["scenario", "gamma_th", "method", "regime"], as_index=False)["accuracy"].mean()
    trace = trace[trace.seed == trace.seed.min()]
    snrs = sorted(curves.snr_db.unique())
    out = []
    with tempfile.TemporaryDirectory() as scratch:
        figures.accuracy_vs_rho(curves.to_dict("records"), digital.to_dict("records"), snrs, Path(scratch))
        figures.flops_gain(gain.to_dict("records"), Path(scratch))
        figures.controller(control.to_dict("records"), trace.to_dict("records"), Path(scratch))
        (results / "figures").mkdir(parents=True, exist_ok=True)
        for written in sorted(Path(scratch).rglob("*.*")):
            target = results / "figures" / f"{NAMES[written.stem]}{written.suffix}"
            shutil.move(str(written), target)
            out.append(target)
    return out

"""Figures written by the semcom runs (under `<run>/figures/`), from the rows the parts measured."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from thesis.core.plotting import new_figure, plt, save_figure
from thesis.semcom.digital import to_uint8
from thesis.semcom.evaluate import envelope

LABELS = {"adaptive_robust": "Proposal (robust)", "adaptive_noiseless": "Proposal (noiseless)",
          "vitae_robust": "ViT AE (robust)", "vitae_noiseless": "ViT AE (noiseless)",
          "mnv3cnn_robust": "MNv3 CNN (robust)", "mnv3cnn_noiseless": "MNv3 CNN (noiseless)",
          "mnv3_robust": "MNv3 (robust)", "mnv3_noiseless": "MNv3 (noiseless)"}
POINTS = {"vitae_robust": "o", "vitae_noiseless": "x", "mnv3cnn_robust": "s", "mnv3cnn_noiseless": "+",
          "mnv3_robust": "^", "mnv3_noiseless": "v"}


def accuracy_vs_rho(curves: list[dict], digital: list[dict], snrs, root: Path) -> list[Path]:
    """Figs. 3.27-3.28 analogue: one panel per test SNR; proposal envelopes as lines, ViT AE and
    MobileNetV3 baselines (when measured) as points (one per r), digital schemes as lines."""
    frame, dig = pd.DataFrame(curves), pd.DataFrame(digital)
    fig, axes = new_figure(width=3.2 * len(snrs), height=3.0, ncols=len(snrs))
    axes = np.atleast_1d(axes)
    for ax, snr in zip(axes, snrs):
        at = frame[frame.snr_db == snr]
        for pipeline, style in (("adaptive_robust", "-"), ("adaptive_noiseless", "--")):
            part = at[at.pipeline == pipeline].groupby(["alpha", "r"])[["rho", "accuracy"]].mean()
            x, y = envelope(part.rho.to_numpy(), part.accuracy.to_numpy())
            ax.step(x, y, style, where="post", label=LABELS[pipeline])
        for pipeline, marker in POINTS.items():
            part = at[at.pipeline == pipeline]
            if part.empty:
                continue
            ax.scatter(part.rho, part.accuracy, marker=marker, label=LABELS[pipeline], zorder=3)
        for scheme, part in dig[dig.snr_db == snr].groupby("scheme"):
            ax.plot(part.rho, part.accuracy, ":", label=f"digital {scheme}")
        ax.set_xscale("log")
        ax.set_title(f"SNR {snr:g} dB")
        ax.set_xlabel("rho = q / p")
    axes[0].set_ylabel("test accuracy")
    axes[-1].legend(fontsize=6)
    return save_figure(fig, root, "semcom_accuracy_vs_rho")


def flops_gain(rows: list[dict], root: Path) -> list[Path]:
    """Fig. 3.29 analogue: accuracy and FLOPs gain vs alpha, one line per lambda_s."""
    frame = pd.DataFrame(rows)
    fig, (left, right) = new_figure(width=8.0, height=3.0, ncols=2)
    for lam, part in frame.groupby("lambda_s"):
        left.plot(part.alpha, part.accuracy, marker="o", label=f"lambda_s={lam:g}")
        right.plot(part.alpha, 100 * part.flops_gain, marker="o", label=f"lambda_s={lam:g}")
    left.set_xlabel("budget alpha")
    left.set_ylabel("test accuracy")
    right.set_xlabel("budget alpha")
    right.set_ylabel("FLOPs gain (%)")
    right.legend(fontsize=7)
    return save_figure(fig, root, "semcom_flops_gain")


def controller(rows: list[dict], traces: list[dict], root: Path) -> list[Path]:
    """Fig. 3.30 analogue (accuracy per Gamma_th, per scenario) and the queue / running-average rho
    of Alg. 2 over time (long-term constraint met, queue stable)."""
    frame, trace = pd.DataFrame(rows), pd.DataFrame(traces)
    scenarios = list(dict.fromkeys(frame.scenario))
    fig, axes = new_figure(width=3.0 * len(scenarios), height=3.0, ncols=len(scenarios))
    for ax, scenario in zip(np.atleast_1d(axes), scenarios):
        for (method, regime), part in frame[frame.scenario == scenario].groupby(["method", "regime"]):
            ax.plot(part.gamma_th, part.accuracy, marker="o", label=f"{method} {regime}")
        ax.set_xscale("log")
        ax.set_title(scenario)
        ax.set_xlabel("Gamma_th")
    np.atleast_1d(axes)[0].set_ylabel("deployed test accuracy")
    np.atleast_1d(axes)[-1].legend(fontsize=6)
    paths = save_figure(fig, root, "semcom_controller_accuracy")
    if trace.empty:
        return paths
    pick = trace[(trace.method == "Proposal") & (trace.regime == "R")]
    scenario = pick.scenario.iloc[0] if len(pick) else trace.scenario.iloc[0]
    pick = pick[pick.scenario == scenario] if len(pick) else trace[trace.scenario == scenario]
    fig, (left, right) = new_figure(width=8.0, height=3.0, ncols=2)
    for gamma, part in pick.groupby("gamma_th"):
        line = left.plot(part.t, part.avg_rho, label=f"Gamma_th={gamma:g}")[0]
        left.axhline(gamma, color=line.get_color(), ls=":", lw=0.8)
        right.plot(part.t, part.queue, color=line.get_color())
    left.set_yscale("log")
    left.set_xlabel("slot t")
    left.set_ylabel("running average rho")
    left.set_title(f"Proposal (R), {scenario}")
    left.legend(fontsize=6)
    right.set_xlabel("slot t")
    right.set_ylabel("virtual queue Z(t)")
    return paths + save_figure(fig, root, "semcom_controller_queue")


def selection_maps(images, rows: list[dict], side: int, mean, std, root: Path) -> list[Path]:
    """Fig. 3.31 analogue: rows = budgets, columns = blocks; dropped patches are darkened."""
    frame = pd.DataFrame(rows)
    alphas, blocks = sorted(frame.alpha.unique()), sorted(frame.block.unique())
    pixels = to_uint8(images, mean, std)
    patch = pixels.shape[1] // side
    fig, axes = plt.subplots(len(alphas), len(blocks), figsize=(1.6 * len(blocks), 1.6 * len(alphas)),
                             squeeze=False, constrained_layout=True)
    for i, alpha in enumerate(alphas):
        for j, block in enumerate(blocks):
            kept = frame[(frame.image == 0) & (frame.alpha == alpha) & (frame.block == block)].sort_values("token")
            shade = np.kron(kept.kept.to_numpy().reshape(side, side), np.ones((patch, patch)))
            shown = pixels[0].astype(float) * (0.25 + 0.75 * shade[..., None])
            axes[i, j].imshow(shown.astype(np.uint8))
            axes[i, j].set_xticks([])
            axes[i, j].set_yticks([])
            if i == 0:
                axes[i, j].set_title(f"block {block}", fontsize=8)
            if j == 0:
                axes[i, j].set_ylabel(f"alpha={alpha:g}", fontsize=8)
    return save_figure(fig, root, "semcom_selection_maps")

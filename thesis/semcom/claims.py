"""The miniature's pre-registered claims (spec B.8 (b)), computed from what the parts measured.

Thresholds live in `configs/method/semcom_mini.yaml`, fixed before the first run.
"""

from __future__ import annotations

import numpy as np
from omegaconf import DictConfig

from thesis.core.claims import claim
from thesis.core.errors import ConfigError
from thesis.semcom.evaluate import envelope_at

NEEDS = {"curves": "curves", "digital": "curves", "budget_adherence": "flops_gain", "controller": "controller"}


def _points(rows: list[dict], pipeline: str, snr: float) -> tuple[np.ndarray, np.ndarray]:
    pick = [r for r in rows if r["pipeline"] == pipeline and r["snr_db"] == snr]
    return np.array([r["rho"] for r in pick]), np.array([r["accuracy"] for r in pick])


def _area(rho: np.ndarray, acc: np.ndarray, lo: float, hi: float, points: int = 50) -> float:
    """Mean envelope accuracy over a log-spaced rho range (area under the curve per decade)."""
    return float(np.mean([envelope_at(rho, acc, x) for x in np.geomspace(lo, hi, points)]))


def mini_claims(ctx, limits: DictConfig) -> list[dict]:
    missing = sorted({part for table, part in NEEDS.items() if table not in ctx.tables})
    if missing:
        raise ConfigError(f"method.claims needs the parts {missing}: add them to method.parts or set method.claims=null")
    curves, digital, chance = ctx.tables["curves"], ctx.tables["digital"], 1.0 / ctx.data.num_classes
    lo, hi = ctx.cfg.method.evaluation.adherence_range
    adherence = [abs(r["hard_kept"] - r["alpha"]) for r in ctx.tables["budget_adherence"] if lo <= r["alpha"] <= hi]
    gaps, below, areas, ratios = [], [], [], []
    for snr in ctx.cfg.method.evaluation.test_snrs:
        rho_a, acc_a = _points(curves, "adaptive_robust", snr)
        rho_v, acc_v = _points(curves, "vitae_robust", snr)
        gaps += [envelope_at(rho_a, acc_a, r) - a for r, a in zip(rho_v, acc_v)]
        small = rho_a < rho_v.min()
        below.append((acc_a[small].max() if small.any() else 0.0) - chance)
        if snr <= 0:
            rho_n, acc_n = _points(curves, "adaptive_noiseless", snr)
            span = (min(rho_a.min(), rho_n.min()), max(rho_a.max(), rho_n.max()))
            areas.append(_area(rho_a, acc_a, *span) - _area(rho_n, acc_n, *span))
        mid = float(np.sqrt(rho_a.min() * rho_a.max()))
        target = envelope_at(rho_a, acc_a, mid)
        if target >= chance + limits.digital_min_margin:
            best = {}
            for r in digital:
                if r["snr_db"] == snr:
                    best[r["rho"]] = max(best.get(r["rho"], 0.0), r["accuracy"])
            reach = [rho for rho, acc in sorted(best.items()) if acc >= target]
            ratios.append(reach[0] / mid if reach else np.inf)
    control = [r for r in ctx.tables["controller"]]
    feasible = [r["avg_rho"] / r["gamma_th"] for r in control if r["feasible"]]
    strict = sorted({r["gamma_th"] for r in control})[:2]
    wins = 0
    for scenario in dict.fromkeys(r["scenario"] for r in control):
        def acc(method: str, gamma: float) -> float:
            (row,) = [r for r in control if r["scenario"] == scenario and r["gamma_th"] == gamma
                      and r["method"] == method and r["regime"] == "R"]
            return row["accuracy"] if row["feasible"] else -np.inf
        wins += all(acc("Proposal", g) >= acc("ViT AE", g) and np.isfinite(acc("Proposal", g)) for g in strict)
    return [
        claim("B1", "mean |hard kept fraction at block s - alpha| over alpha in the adherence range",
              float(np.mean(adherence)), "<=", limits.max_hard_adherence),
        claim("B2", "worst (adaptive robust envelope at rho <= rho_AE) minus ViT AE accuracy, over SNRs and r",
              float(min(gaps)), ">=", -limits.ae_margin),
        claim("B2b", "worst over SNRs of (best adaptive accuracy below the smallest ViT AE rho) minus chance",
              float(min(below)), ">=", limits.chance_margin),
        claim("B3", "worst over SNR <= 0 dB of envelope area, robust minus noiseless", float(min(areas, default=np.nan)),
              ">=", limits.min_robust_gain),
        claim("B4", "smallest rho ratio digital / adaptive at the adaptive mid-range accuracy",
              float(min(ratios, default=np.nan)), ">=", limits.min_digital_ratio),
        claim("B5a", "worst deployed time-average rho / Gamma_th where the (V, mu) search succeeded",
              float(max(feasible, default=np.nan)), "<=", limits.max_rho_slack),
        claim("B5b", "SNR scenarios where Proposal >= ViT AE (R) at both strictest Gamma_th", float(wins), ">=",
              limits.min_strict_wins),
    ]

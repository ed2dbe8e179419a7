"""The miniature's claim arithmetic: binomial standard errors, drops in standard errors, relative
drops, and the claims table built from hand-made summaries."""

import math
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from thesis.sinks.mini.claims import binomial_stderr, drop_in_stderrs, mini_claims, relative_drop

LIMITS = OmegaConf.load(Path(__file__).parents[2] / "configs" / "method" / "sinks_mini.yaml").claims


def test_binomial_stderr_and_drops():
    assert binomial_stderr(50, 200) == pytest.approx(math.sqrt(0.25 * 0.75 / 200))
    assert binomial_stderr(0, 10) == 0.0
    se = math.hypot(binomial_stderr(80, 100), binomial_stderr(70, 100))
    assert drop_in_stderrs((80, 100), (70, 100)) == pytest.approx(0.1 / se)
    assert drop_in_stderrs((100, 100), (100, 100)) == 0.0 and drop_in_stderrs((10, 10), (0, 10)) == math.inf
    assert relative_drop((80, 100), (20, 100)) == pytest.approx(0.75)
    assert math.isnan(relative_drop((0, 100), (0, 100)))


def summary(prevalence, move, semantic=2.0, rho=0.5, drift=0.3):
    out = {"sink_prevalence": prevalence, "non_sink_share": 0.98, "move_rate": move, "enrichment/semantic": semantic,
           "rightmost_mask_rho": rho, "drift_rho": drift, "layer0/rightmost_mask_rho": rho,
           "layer1/rightmost_mask_rho": rho / 2}
    return out


def test_claims_pass_and_fail_where_they_should():
    summaries = {"llada": summary(0.6, 0.3), "dream": summary(0.6, 0.3, drift=-0.3), "arm": summary(0.9, 0.0),
                 "control_llada": summary(0.1, 0.5), "control_dream": summary(0.3, 0.5), "control_arm": summary(0, 0)}
    accuracy = {("llada", 0, "A"): (40, 100), ("llada", 1, "A"): (38, 100), ("dream", 0, "A"): (80, 100),
                ("dream", 1, "A"): (50, 100), ("arm", 0, "A"): (90, 100), ("arm", 1, "A"): (5, 100)}
    rows = {row["claim"]: row["passed"] for row in mini_claims(summaries, accuracy, LIMITS)}
    assert rows["C1_llada_ratio"] and rows["C1_llada_gap"] and not rows["C1_dream_ratio"]
    assert rows["C3_llada"] and rows["C4_dream_early"] and rows["C4_llada_drift"] and rows["C4_dream_drift"]
    assert rows["C5_llada_A"] and not rows["C5_dream_A"] and rows["C5_arm_A"]
    assert not rows["C0_llada_A"] and rows["C0_arm_A"]
    assert len(rows) == 3 + 8 + 5 + 3

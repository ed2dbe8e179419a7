"""The miniature's pre-registered claims (spec B.7 (b) 1-5), thresholds from `method.claims`.

Every claim is one row of `thesis.core.claims.claim`; a value that cannot be measured (no sink,
an accuracy of zero) is NaN and fails its claim.
"""

from __future__ import annotations

import math

from omegaconf import DictConfig

from thesis.core.claims import claim

DLMS = ("llada", "dream")


def binomial_stderr(hits: int, n: int) -> float:
    p = hits / n
    return math.sqrt(p * (1 - p) / n)


def drop_in_stderrs(unmasked: tuple[int, int], masked: tuple[int, int]) -> float:
    """(acc_0 - acc_K) / sqrt(se_0^2 + se_K^2); 0 for no change, +-inf for a change of two exact scores."""
    difference = unmasked[0] / unmasked[1] - masked[0] / masked[1]
    spread = math.hypot(binomial_stderr(*unmasked), binomial_stderr(*masked))
    if spread == 0:
        return 0.0 if difference == 0 else math.copysign(math.inf, difference)
    return difference / spread


def relative_drop(unmasked: tuple[int, int], masked: tuple[int, int]) -> float:
    if unmasked[0] == 0:
        return float("nan")
    return 1 - (masked[0] / masked[1]) / (unmasked[0] / unmasked[1])


def ratio(a: float, b: float) -> float:
    if b == 0:
        return math.inf if a > 0 else float("nan")
    return a / b


def mini_claims(summary: dict[str, dict[str, float]], accuracy: dict[tuple[str, int, str], tuple[int, int]],
                limits: DictConfig) -> list[dict]:
    """`summary[name]`: SinkStats.summary() of each trained model and its random-init `control_<name>`;
    `accuracy[(name, topk, task)]`: (hits, n)."""
    rows = [claim(f"C0_{name}_{task}", f"{name}, task {task}: held-out exact match, unmasked (the model learned)",
                  hits / n, ">=", limits.min_exact_match)
            for (name, topk, task), (hits, n) in accuracy.items() if topk == 0 and name in (*DLMS, "arm")]
    for name in DLMS:
        trained, control = summary[name]["sink_prevalence"], summary[f"control_{name}"]["sink_prevalence"]
        rows.append(claim(f"C1_{name}_ratio", f"{name}: sink prevalence, trained / random-init", ratio(trained, control),
                          ">=", limits.prevalence_ratio))
        rows.append(claim(f"C1_{name}_gap", f"{name}: sink prevalence, trained minus random-init", trained - control,
                          ">=", limits.prevalence_gap))
        rows.append(claim(f"C2_{name}", f"{name}: share of tokens not sinks at eps = 3 (S = prompt + response)",
                          summary[name]["non_sink_share"], ">=", limits.min_non_sink_share))
        rows.append(claim(f"C3_{name}", f"main-sink move rate, {name} minus arm",
                          summary[name]["move_rate"] - summary["arm"]["move_rate"], ">=", limits.mobility_gap))
    rows.append(claim("C4_llada_semantic", "llada: share of sinks on punctuation/EOS / their share of tokens",
                      summary["llada"]["enrichment/semantic"], ">=", limits.semantic_enrichment))
    dream = summary["dream"]
    rows.append(claim("C4_dream_rightmost", "dream: Spearman(main-sink position, rightmost masked position)",
                      dream["rightmost_mask_rho"], ">=", limits.min_rightmost_rho))
    last = max(int(key.split("/")[0][5:]) for key in dream if key.startswith("layer"))
    rows.append(claim("C4_dream_early", "dream: that Spearman, first layer minus last layer",
                      dream["layer0/rightmost_mask_rho"] - dream[f"layer{last}/rightmost_mask_rho"], ">=",
                      limits.early_minus_late_rho))
    rows.append(claim("C4_llada_drift", "llada: Spearman(step, main-sink position) (drift right)",
                      summary["llada"]["drift_rho"], ">=", limits.llada_min_drift_rho))
    rows.append(claim("C4_dream_drift", "dream: Spearman(step, main-sink position) (drift left)",
                      dream["drift_rho"], "<=", limits.dream_max_drift_rho))
    for task in sorted({key[2] for key in accuracy}):
        for name in DLMS:
            rows.append(claim(f"C5_{name}_{task}", f"{name}, task {task}: exact-match drop at top-1 masking, in stderrs",
                              drop_in_stderrs(accuracy[(name, 0, task)], accuracy[(name, 1, task)]), "<=",
                              limits.dlm_max_drop_stderrs))
        rows.append(claim(f"C5_arm_{task}", f"arm, task {task}: relative exact-match drop at top-1 masking",
                          relative_drop(accuracy[("arm", 0, task)], accuracy[("arm", 1, task)]), ">=",
                          limits.arm_min_relative_drop))
    return rows

"""The pre-registered claims G0 and C1-C6 of the miniature (spec F.b), judged on the run's tables.

Thresholds come from `method.claims` (configs/method/kv_mini.yaml), fixed before any run. Every
criterion is one row of `thesis.core.claims.claim`; a claim made of several criteria gets one row
per criterion (`C1.rho_median`, ...) and a summary row (`C1`) whose value is the number of criteria
met, against the number required. Retrieval accuracy is the mean of passkey and NIAH accuracy.
Perplexities are over positions beyond the budget (where the caches differ).

Verdicts: "reproduced" / "not reproduced" ("not measured" when the run did not evaluate a setting the
criterion needs, e.g. a smoke run's short sweep); when the competence gate G0 fails (the full-cache model
does not retrieve, or its perplexity is off), claims that rest on retrieval accuracy are
"inconclusive" unless they pass on their other criteria (C4's perplexity branch), and their
statement says so.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pandas as pd

from thesis.core.claims import claim
from thesis.kvcache.mini.bootstrap import bootstrap_ci

GATE_NOTE = " [inconclusive: competence gate G0 failed, the full-cache model does not retrieve reliably]"


def _summary(name: str, statement: str, parts: list[dict], needed: int | None = None) -> dict:
    met = sum(bool(p["passed"]) for p in parts)
    return claim(name, statement, met, ">=", len(parts) if needed is None else needed)


def _accuracy(retrieval: pd.DataFrame, method: str, ratio: float, query_aware: bool = False) -> float:
    rows = retrieval[(retrieval.method == method) & np.isclose(retrieval.ratio, ratio) & (retrieval.query_aware == query_aware)]
    return float(rows.accuracy.mean()) if len(rows) else float("nan")


def _mean(values: list[float]) -> float:
    """Mean of the finite values (NaN when there are none: a setting the run did not evaluate)."""
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def _wins(values: list[tuple[float, float]], gap: float) -> int:
    return sum(a - b >= gap for a, b in values)


def evaluate_claims(settings: Mapping[str, Any], heads: pd.DataFrame, filters: pd.DataFrame,
                    streaming: pd.DataFrame, chunk_nll: Mapping[str, np.ndarray], retrieval: pd.DataFrame,
                    reconstruction: pd.DataFrame | None, full_ppl: float) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []

    # G0: competence gate
    g0 = settings["g0"]
    g0_parts = [claim("G0.passkey", "full-cache passkey accuracy", _accuracy(retrieval[retrieval.task == "passkey"], "full", 0.0), ">=", g0["min_accuracy"]),
                claim("G0.niah", "full-cache NIAH accuracy", _accuracy(retrieval[retrieval.task == "niah"], "full", 0.0), ">=", g0["min_accuracy"]),
                claim("G0.ppl", "held-out byte perplexity, full cache", full_ppl if np.isfinite(full_ppl) else 1e9, "<=", g0["max_ppl"])]
    rows += g0_parts
    gate = _summary("G0", "competence gate: full-cache passkey and NIAH accuracy >= 90%, held-out PPL < 4", g0_parts)
    rows.append(gate)

    # C1: low key norm <-> high attention
    c1 = settings["c1"]
    deep = heads[heads.layer >= c1["from_layer"]]
    alr = heads.groupby("layer").alr_knorm.mean()
    c1_parts = [claim("C1.rho_median", "median over heads (layers >= 1) of Spearman(-||k||, S)", deep.rho_knorm.median(), ">=", c1["min_median_rho"]),
                claim("C1.rho_positive", "fraction of heads (layers >= 1) with Spearman(-||k||, S) > 0", (deep.rho_knorm > 0).mean(), ">=", c1["min_positive_fraction"]),
                claim("C1.bos_min_norm", "fraction of heads (layers >= 1) where BOS has the smallest key norm", deep.bos_min_norm.mean(), ">=", c1["min_bos_fraction"]),
                claim("C1.alr", "mean ALR(knorm) - mean ALR(random), all heads", heads.alr_knorm.mean() - heads.alr_random.mean(), "<=", 0.0),
                claim("C1.alr_layer0", "layer 0's mean ALR minus the highest other layer's (>= 0: layer 0 highest)",
                      float(alr.loc[0] - alr.drop(0).max()) if len(alr) > 1 else 0.0, ">=", 0.0)]
    rows += c1_parts
    rows.append(_summary("C1", "low key norm <-> high attention (Figs. 4.1, 4.2)", c1_parts))

    # C2: KNorm ~ no loss at 50%, ordering knorm < random < keep-high
    c2 = settings["c2"]
    def ppl(method, ratio, window=0):
        row = streaming[(streaming.protocol == "budget") & (streaming.method == method) & np.isclose(streaming.ratio, ratio) & (streaming.window == window)]
        return float(row.ppl_beyond_budget.iloc[0]) if len(row) else float("nan")
    def full_beyond(ratio):
        row = streaming[(streaming.protocol == "budget") & np.isclose(streaming.ratio, ratio)]
        return float(row.full_ppl_beyond_budget.iloc[0]) if len(row) else float("nan")
    wins = 0
    for ratio in c2["ratios"]:
        knorm, random = chunk_nll.get(f"knorm/{ratio}/0"), chunk_nll.get(f"random/{ratio}/0")
        if knorm is not None and random is not None:
            wins += int(bootstrap_ci(knorm - random)[1] < 0)
    c2_parts = [claim("C2.knorm_half", "PPL_knorm(50%) / PPL_full beyond the budget", ppl("knorm", 0.5) / full_beyond(0.5), "<=", c2["max_ppl_ratio"]),
                claim("C2.knorm_vs_random", f"ratios of {c2['ratios']} where PPL_knorm < PPL_random (paired bootstrap 95% CI of the NLL gap below 0)", wins, ">=", c2["min_wins"]),
                claim("C2.random_vs_high", "PPL_random(50%) - PPL_keep-high(50%)", ppl("random", 0.5) - ppl("keep_high", 0.5), "<=", 0.0)]
    rows += c2_parts
    rows.append(_summary("C2", "KNorm ~ no loss at 50%; PPL knorm < random < keep-high (Fig. 4.3)", c2_parts))

    # C3: KNorm beats random on retrieval
    c3 = settings["c3"]
    pairs = [(_accuracy(retrieval, "knorm", r), _accuracy(retrieval, "random", r)) for r in c3["ratios"]]
    high = _mean([_accuracy(retrieval, "keep_high", r) - _accuracy(retrieval, "random", r) for r in c3["ratios"]])
    skip = _mean([_accuracy(retrieval, "knorm_skip01", r) - _accuracy(retrieval, "knorm", r) for r in c3["ratios"]])
    c3_parts = [claim("C3.knorm_vs_random", f"ratios of {c3['ratios']} with acc_knorm - acc_random >= {c3['min_gap']}", _wins(pairs, c3["min_gap"]), ">=", c3["min_wins"]),
                claim("C3.high_vs_random", "mean over those ratios of acc_keep-high - acc_random", high, "<=", 0.0),
                claim("C3.skip", "mean over those ratios of acc_knorm(skip 0,1) - acc_knorm(skip none)", skip, ">=", 0.0)]
    rows += c3_parts
    rows.append(_summary("C3", "KNorm beats random on passkey / needle (Fig. 4.4)", c3_parts))

    # C4: Q-Filters beat KNorm
    c4 = settings["c4"]
    head_share = float((heads.rho_qfilters > heads.rho_knorm).mean())
    ppl_branch = all(ppl("qfilters", r, c4["window"]) < ppl("knorm", r, c4["window"]) for r in c4["ppl_ratios"])
    acc_pairs = [(_accuracy(retrieval, "qfilters", r), _accuracy(retrieval, "knorm", r)) for r in c4["acc_ratios"]]
    acc_branch = _wins(acc_pairs, c4["min_gap"]) >= c4["min_wins"]
    c4_parts = [claim("C4.rho_heads", "fraction of heads with Spearman(Q-Filters, S) > Spearman(-||k||, S)", head_share, ">=", c4["min_head_fraction"]),
                claim("C4.ppl_or_acc", f"PPL_qf < PPL_knorm at ratios {c4['ppl_ratios']} (window {c4['window']}) [{int(ppl_branch)}] "
                      f"or acc_qf >= acc_knorm + {c4['min_gap']} at >= {c4['min_wins']} of {c4['acc_ratios']} [{int(acc_branch)}]",
                      int(ppl_branch or acc_branch), ">=", 1)]
    c4_parts[1]["retrieval_only"] = not ppl_branch
    rows += c4_parts
    c4_row = _summary("C4", "Q-Filters beat KNorm (Figs. 4.31, 4.40)", c4_parts)
    c4_row["retrieval_only"] = bool(c4_parts[0]["passed"]) and not ppl_branch
    rows.append(c4_row)

    # C5: EA beats KNorm
    c5 = settings["c5"]
    ea_pairs = [(_accuracy(retrieval, "expected_attention", r), _accuracy(retrieval, "knorm", r)) for r in c5["acc_ratios"]]
    c5_parts = [claim("C5.acc", f"ratios of {c5['acc_ratios']} with acc_EA >= acc_knorm + {c5['min_gap']}", _wins(ea_pairs, c5["min_gap"]), ">=", c5["min_wins"])]
    if reconstruction is not None and len(reconstruction):
        rec = reconstruction[reconstruction.ratio >= c5["reconstruction_min_ratio"]].set_index(["method", "ratio"]).error
        ratios = sorted({r for _, r in rec.index})
        worse = sum(rec.get(("expected_attention", r), np.inf) >= rec.get(("knorm", r), -np.inf) for r in ratios)
        c5_parts.append(claim("C5.reconstruction", f"ratios >= {c5['reconstruction_min_ratio']} where the EA reconstruction error is not below KNorm's", worse, "<=", 0))
    rows += c5_parts
    secondary = [gap for r in c5["secondary_ratios"] if np.isfinite(gap := ppl("expected_attention", r) - ppl("knorm", r))]
    rows.append(claim("C5.decoding_secondary", f"(secondary, not part of C5) max over ratios {c5['secondary_ratios']} of PPL_EA - PPL_knorm (decoding)",
                      max(secondary) if secondary else float("nan"), "<=", 0.0))
    rows.append(_summary("C5", "Expected Attention beats KNorm (Figs. 4.43, 4.46)", c5_parts))

    # C6: EA scores track observed attention
    rows.append(claim("C6", "median Spearman(EA logit, S) - median Spearman(-||k||, S) over heads (Fig. 4.50)",
                      float(heads.rho_ea.median() - heads.rho_knorm.median()), ">=", 0.0))
    rows.append(claim("C0.qfilters_sign", "(reported) fraction of (layer, KV head) with mean <k, v1+> < 0 (thesis: vast majority)",
                      float((filters.mean_projection < 0).mean()), ">=", 0.5))

    for row in rows:
        row.setdefault("retrieval_only", row["claim"] in ("C3", "C5") or row["claim"].startswith(("C3.", "C5.acc")))
        if not np.isfinite(row["value"]):
            row["verdict"] = "not measured"
        elif row["retrieval_only"] and not gate["passed"]:
            row["verdict"] = "inconclusive"
            row["statement"] += GATE_NOTE
        else:
            row["verdict"] = "reproduced" if row["passed"] else "not reproduced"
    return rows

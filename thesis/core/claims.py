"""Pre-registered claims of a miniature: measured value, threshold fixed in config, verdict."""

from __future__ import annotations


def claim(name: str, statement: str, value: float, direction: str, threshold: float) -> dict[str, object]:
    """One row of a run's `claims` table; `direction` is ">=" or "<=" (value vs threshold)."""
    if direction not in (">=", "<="):
        raise ValueError(f"direction must be '>=' or '<=', got {direction!r}")
    passed = value >= threshold if direction == ">=" else value <= threshold
    return {"claim": name, "statement": statement, "value": float(value), "direction": direction,
            "threshold": float(threshold), "passed": bool(passed)}


def claim_metrics(rows: list[dict[str, object]]) -> dict[str, object]:
    """The claims as flat metrics (`claims/<name>/value`, `claims/<name>/passed`)."""
    metrics: dict[str, object] = {}
    for row in rows:
        metrics[f"claims/{row['claim']}/value"] = row["value"]
        metrics[f"claims/{row['claim']}/passed"] = row["passed"]
    return metrics

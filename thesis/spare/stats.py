"""Distribution statistics of last-position activations (thesis 5.1.12, 5.3.3; spec B.4).

"Skewness" in the thesis means heavy tails / sparsity: Pearson kurtosis (not excess), Hoyer
sparsity and the Gini index (code form: 1 - 2/d sum_k (d - k + 1) c_(k) / ||c||_1 over |v| sorted
ascending), plus L1 and L2 norms. Groups are compared per layer with Welch's t-test.
"""

from __future__ import annotations

import numpy as np

STATISTICS = ("kurtosis", "hoyer", "gini", "l1", "l2")


def kurtosis(v: np.ndarray) -> np.ndarray:
    """Pearson kurtosis per row; NaN for a constant row (no spread to normalise by)."""
    centred = v - v.mean(-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (centred ** 4).mean(-1) / ((centred ** 2).mean(-1) ** 2)


def hoyer(v: np.ndarray) -> np.ndarray:
    d = v.shape[-1]
    ratio = np.abs(v).sum(-1) / np.linalg.norm(v, axis=-1)
    return (np.sqrt(d) - ratio) / (np.sqrt(d) - 1)


def gini(v: np.ndarray) -> np.ndarray:
    c = np.sort(np.abs(v), axis=-1)
    d = c.shape[-1]
    weights = d - np.arange(1, d + 1) + 1
    return 1 - 2 / d * (c * weights).sum(-1) / c.sum(-1)


def statistics(v: np.ndarray) -> dict[str, np.ndarray]:
    """Every statistic of each row of v (N, d), as float64."""
    v = np.asarray(v, dtype=np.float64)
    return {"kurtosis": kurtosis(v), "hoyer": hoyer(v), "gini": gini(v), "l1": np.abs(v).sum(-1),
            "l2": np.linalg.norm(v, axis=-1)}


def compare_groups(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Means of two samples, Welch's t and p, and Cohen's d (pooled std)."""
    from scipy.stats import ttest_ind

    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 2 or len(b) < 2:
        return {"mean_a": float(np.mean(a)) if len(a) else float("nan"),
                "mean_b": float(np.mean(b)) if len(b) else float("nan"), "t": float("nan"), "p": float("nan"),
                "effect_size": float("nan")}
    test = ttest_ind(a, b, equal_var=False)
    pooled = np.sqrt((a.var(ddof=1) + b.var(ddof=1)) / 2)
    return {"mean_a": float(a.mean()), "mean_b": float(b.mean()), "t": float(test.statistic), "p": float(test.pvalue),
            "effect_size": float((a.mean() - b.mean()) / pooled) if pooled > 0 else 0.0}

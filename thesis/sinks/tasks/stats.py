"""The ± of Table 5.8: the binomial standard error of an accuracy, sqrt(p (1 - p) / n), which is
what the thesis's numbers match for n = 1319 GSM8K and 164 HumanEval problems (spec B.4)."""

from __future__ import annotations

import math


def binomial_stderr(accuracy: float, n: int) -> float:
    if n <= 0:
        raise ValueError(f"need at least one problem, got n={n}")
    return math.sqrt(accuracy * (1.0 - accuracy) / n)

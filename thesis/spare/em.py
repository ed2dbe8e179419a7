"""Exact match (SQuAD normalisation) and the knowledge-selection metrics of thesis 5.1.4 / spec A.6.

EM_C / EM_M: share of answers equal to the context / memory answer while steering to context /
memory. EM_{C->M}: of the instances that answered C without control, the share that answers M when
steered to memory; EM_{M->C} the converse; EM_{M->M} / EM_{C->C}: of those that already answered
M / C, the share kept when steered towards that same behaviour. Off-target rates are logged too.
"""

from __future__ import annotations

import re
import string
import unicodedata
from typing import Sequence

import numpy as np

_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalise(text: str) -> str:
    text = unicodedata.normalize("NFD", text).lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, answers: Sequence[str]) -> bool:
    pred = normalise(prediction)
    return any(pred == normalise(a) for a in answers)


def substring_of_context(prediction: str, context: str) -> bool:
    """Macnoise's EM_C in the authors' code: the prediction is inside the conflicting context
    (an empty prediction counts as a match, as there)."""
    return normalise(prediction) in normalise(context)


def steering_metrics(base_c: np.ndarray, base_m: np.ndarray, to_c_c: np.ndarray, to_c_m: np.ndarray,
                     to_m_c: np.ndarray, to_m_m: np.ndarray) -> dict[str, float]:
    """The six EM metrics (in %) from boolean match arrays: without control (base_*), steered to
    context (to_c_*), steered to memory (to_m_*); `*_c` = matches C, `*_m` = matches M."""
    def share(values: np.ndarray, where: np.ndarray) -> float:
        return 100 * float(values[where].mean()) if where.any() else float("nan")

    base_c, base_m = np.asarray(base_c, bool), np.asarray(base_m, bool)
    return {"em_c": 100 * float(np.mean(to_c_c)), "em_m": 100 * float(np.mean(to_m_m)),
            "em_c_to_m": share(np.asarray(to_m_m), base_c), "em_m_to_c": share(np.asarray(to_c_c), base_m),
            "em_m_to_m": share(np.asarray(to_m_m), base_m), "em_c_to_c": share(np.asarray(to_c_c), base_c),
            "off_target_m_when_to_c": 100 * float(np.mean(to_c_m)),
            "off_target_c_when_to_m": 100 * float(np.mean(to_m_c))}

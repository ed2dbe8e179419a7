"""Metrics of Table 10: accuracy and macro precision, recall and F1 (macro: the thesis's recall
differs from its accuracy), plus per-class scores and the confusion matrix."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support


def classification_metrics(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> dict[str, float]:
    labels, preds = np.asarray(labels), np.asarray(preds)
    present = np.arange(num_classes)
    p, r, f, _ = precision_recall_fscore_support(labels, preds, labels=present, average="macro", zero_division=0)
    return {"acc": float((labels == preds).mean()) if len(labels) else float("nan"),
            "precision": float(p), "recall": float(r), "f1": float(f)}


def confusion(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """(true, predicted) counts."""
    return confusion_matrix(labels, preds, labels=np.arange(num_classes))


def per_class_rows(labels: np.ndarray, preds: np.ndarray, class_ids: list[int]) -> list[dict]:
    p, r, f, support = precision_recall_fscore_support(labels, preds, labels=np.arange(len(class_ids)),
                                                       average=None, zero_division=0)
    return [{"class_id": c, "precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]),
             "support": int(support[i])} for i, c in enumerate(class_ids)]


def confusion_rows(matrix: np.ndarray, class_ids: list[int], **keys) -> list[dict]:
    return [{**keys, "true": class_ids[i], "pred": class_ids[j], "count": int(matrix[i, j])}
            for i in range(len(class_ids)) for j in range(len(class_ids))]


def largest_confusion(matrix: np.ndarray) -> tuple[int, int, int]:
    """(true, predicted, count) of the largest off-diagonal cell (row-major first on ties)."""
    off = matrix.copy()
    np.fill_diagonal(off, -1)
    i, j = np.unravel_index(int(np.argmax(off)), off.shape)
    return int(i), int(j), int(matrix[i, j])

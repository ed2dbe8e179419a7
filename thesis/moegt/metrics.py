"""Test metrics of Table 5.4 (accuracy, precision, recall, F1, ROC AUC) and the routing counts of
Fig. 5.27, computed here so that a run needs no metric library beyond numpy (checked against
scikit-learn in the tests)."""

from __future__ import annotations

import numpy as np


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve = P(score of a random positive > score of a random negative),
    ties counting one half (Mann-Whitney statistic with average ranks)."""
    labels, scores = np.asarray(labels).astype(bool), np.asarray(scores, dtype=float)
    positives, negatives = labels.sum(), (~labels).sum()
    if positives == 0 or negatives == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_scores)) + 1]
    ends = np.r_[starts[1:], len(scores)]
    for start, end in zip(starts, ends):
        ranks[order[start:end]] = (start + end + 1) / 2
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def binary_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """Signal (label 1) is the positive class; predicted positive when score >= threshold."""
    labels = np.asarray(labels).astype(bool)
    predicted = np.asarray(scores) >= threshold
    tp, fp, fn = (predicted & labels).sum(), (predicted & ~labels).sum(), (~predicted & labels).sum()
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"acc": float((predicted == labels).mean()), "precision": float(precision), "recall": float(recall),
            "f1": float(f1), "auc": roc_auc(labels, scores)}


def routing_counts(node_types: np.ndarray, experts: np.ndarray, num_experts: int, num_types: int = 7) -> np.ndarray:
    """(num_types, num_experts) counts of (node type, expert) top-k memberships; `experts` is
    (nodes, k), so the counts sum to k x nodes."""
    counts = np.zeros((num_types, num_experts), dtype=np.int64)
    np.add.at(counts, (np.repeat(node_types, experts.shape[1]), experts.reshape(-1)), 1)
    return counts


def normalised_mutual_information(counts: np.ndarray) -> float:
    """NMI(node type; expert) = I / sqrt(H(type) H(expert)) of a count matrix (spec A.8 specialisation score)."""
    joint = counts / counts.sum()
    rows, cols = joint.sum(1, keepdims=True), joint.sum(0, keepdims=True)
    nonzero = joint > 0
    mutual = (joint[nonzero] * np.log(joint[nonzero] / (rows @ cols)[nonzero])).sum()
    entropy = [-(p[p > 0] * np.log(p[p > 0])).sum() for p in (rows, cols)]
    return float(mutual / np.sqrt(entropy[0] * entropy[1])) if min(entropy) > 0 else 0.0


def expert_load_cv(counts: np.ndarray) -> float:
    """Coefficient of variation (population std / mean) of the experts' total routings: 0 for an
    even load; what the load-balancing loss drives down (spec A.8 control w_load = 0)."""
    load = counts.sum(0).astype(float)
    return float(load.std() / load.mean()) if load.mean() > 0 else 0.0


def group_purity(counts: np.ndarray, k: int) -> float:
    """Share of the routings of each present node type that go to its k most used experts, averaged
    over node types: 1 when every type keeps to a fixed k-plet of experts, k / n for a uniform router."""
    present = counts.sum(1) > 0
    top = np.sort(counts[present], axis=1)[:, ::-1][:, :k].sum(1)
    return float((top / counts[present].sum(1)).mean())

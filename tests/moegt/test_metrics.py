"""Test metrics against scikit-learn; routing counts and NMI."""

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, normalized_mutual_info_score, precision_score, recall_score
from sklearn.metrics import roc_auc_score

from thesis.moegt.metrics import binary_metrics, normalised_mutual_information, roc_auc, routing_counts


@pytest.mark.parametrize("seed", [0, 1])
def test_binary_metrics_match_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 300)
    scores = np.round(np.clip(labels * 0.3 + rng.random(300) * 0.7, 0, 1), 2)  # rounding makes ties
    ours = binary_metrics(labels, scores)
    predicted = scores >= 0.5
    assert ours["acc"] == pytest.approx(accuracy_score(labels, predicted))
    assert ours["precision"] == pytest.approx(precision_score(labels, predicted))
    assert ours["recall"] == pytest.approx(recall_score(labels, predicted))
    assert ours["f1"] == pytest.approx(f1_score(labels, predicted))
    assert ours["auc"] == pytest.approx(roc_auc_score(labels, scores))


def test_auc_of_a_single_class_is_nan():
    assert np.isnan(roc_auc(np.ones(4), np.arange(4)))


def test_routing_counts_sum_to_k_times_nodes_and_nmi_matches_scikit_learn():
    rng = np.random.default_rng(0)
    types = rng.integers(0, 7, 200)
    experts = np.stack([types % 6, (types + 1) % 6], 1)
    experts[:20] = rng.integers(0, 6, (20, 2))
    counts = routing_counts(types, experts, num_experts=6)
    assert counts.sum() == 2 * 200
    expected = normalized_mutual_info_score(np.repeat(types, 2), experts.reshape(-1), average_method="geometric")
    assert normalised_mutual_information(counts) == pytest.approx(expected)

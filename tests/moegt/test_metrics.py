"""Test metrics against scikit-learn; routing counts and NMI."""

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, normalized_mutual_info_score, precision_score, recall_score
from sklearn.metrics import roc_auc_score

from thesis.moegt.metrics import (binary_metrics, expert_load_cv, group_purity, normalised_mutual_information,
                                  roc_auc, routing_counts)


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


def test_load_cv_is_zero_for_even_load_and_grows_with_imbalance():
    even = np.full((7, 6), 10)
    skewed = even.copy()
    skewed[:, 0] += 50
    assert expert_load_cv(even) == 0.0
    load = skewed.sum(0)
    assert expert_load_cv(skewed) == pytest.approx(load.std() / load.mean())


def test_group_purity_is_one_for_fixed_k_plets_and_k_over_n_for_uniform():
    fixed = np.zeros((7, 6), dtype=int)
    for t in range(7):
        fixed[t, [t % 6, (t + 1) % 6]] = 5
    assert group_purity(fixed, k=2) == 1.0
    assert group_purity(np.ones((7, 6)), k=2) == pytest.approx(2 / 6)
    assert group_purity(np.vstack([np.ones((1, 6)), np.zeros((6, 6))]), k=3) == pytest.approx(0.5)  # absent types skipped


def test_attention_summary_mass_and_entropy_of_hand_made_maps():
    import pandas as pd

    from thesis.moegt.analysis import attention_summary

    rows = []
    for subset, row in (("tp", {"b1": 0.5, "b2": 0.5, "j1": 0.0}), ("tn", {"b1": 1 / 3, "b2": 1 / 3, "j1": 1 / 3})):
        for query in ("b1", "j1"):
            rows += [{"subset": subset, "nodes": 3, "layer": 1, "head": 1, "query": query, "key": k, "weight": w}
                     for k, w in row.items()]
    summary = attention_summary(pd.DataFrame(rows), keys=("b1", "b2")).set_index("subset")
    assert summary.loc["tp", "mass_on_keys"] == pytest.approx(1.0)
    assert summary.loc["tn", "mass_on_keys"] == pytest.approx(2 / 3)
    assert summary.loc["tp", "row_entropy"] == pytest.approx(np.log(2))
    assert summary.loc["tn", "row_entropy"] == pytest.approx(np.log(3))

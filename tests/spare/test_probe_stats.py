"""Probes find a planted linear signal and not shuffled labels; statistics take their known values."""

import numpy as np
import pytest

from thesis.spare.probe import ProbeConfig, binary_metrics, group_split, probe_scores, train_probe
from thesis.spare.resid import conflict_probe
from thesis.spare.stats import compare_groups, gini, hoyer, kurtosis, statistics


def planted(n=3000, d=20, seed=0, margin=6.0):
    """Two Gaussian classes `margin` standard deviations apart along a random direction (Bayes accuracy 0.9987)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    direction = rng.standard_normal(d)
    direction /= np.linalg.norm(direction)
    X = rng.standard_normal((n, d)) + np.outer(y - 0.5, direction) * margin
    return X, y


def test_probe_on_planted_signal_is_near_perfect_and_on_shuffled_labels_near_chance():
    X, y = planted()
    train, test = np.arange(3000) < 2000, np.arange(3000) >= 2000
    probe = train_probe(X[train], y[train], ProbeConfig(), seed=0)
    good = binary_metrics(y[test], probe_scores(probe, X[test]))
    assert good["accuracy"] > 0.95 and good["auroc"] > 0.98
    shuffled = np.random.default_rng(1).permutation(y)
    probe = train_probe(X[train], shuffled[train], ProbeConfig(), seed=0)
    bad = binary_metrics(shuffled[test], probe_scores(probe, X[test]))
    assert abs(bad["auroc"] - 0.5) < 0.12 and abs(bad["accuracy"] - 0.5) < 0.12


def test_group_split_is_question_disjoint():
    groups = [f"q{i % 30}" for i in range(120)]
    train, test = group_split(groups, 10)
    assert not {g for g, t in zip(groups, test) if t} & {g for g, t in zip(groups, train) if t}
    assert len({g for g, t in zip(groups, test) if t}) == 10


def test_conflict_probe_reads_a_planted_conflict_direction():
    rng = np.random.default_rng(0)
    n, d = 1000, 16
    groups = [f"q{i}" for i in range(n)]
    base = rng.standard_normal((n, d))
    shift = np.zeros(d)
    shift[0] = 3.0
    conflict = {("hidden", 0): base + shift, ("hidden", 1): base.copy()}
    no_conflict = {("hidden", 0): base + 0.1 * rng.standard_normal((n, d)), ("hidden", 1): base.copy()}
    rows = conflict_probe(conflict, no_conflict, groups, 100, ProbeConfig(), [0])
    by_layer = {r["layer"]: r["auroc"] for r in rows}
    assert by_layer[0] > 0.95 and by_layer[1] == pytest.approx(0.5, abs=0.1)


def test_statistics_known_values():
    rng = np.random.default_rng(0)
    assert kurtosis(rng.standard_normal(4096)) == pytest.approx(3.0, abs=0.3)
    d = 64
    one_hot, constant = np.eye(d)[0], np.ones(d)
    assert hoyer(one_hot) == pytest.approx(1.0) and hoyer(constant) == pytest.approx(0.0, abs=1e-12)
    assert gini(constant) == pytest.approx(-1 / d, abs=1e-12)
    assert gini(one_hot) == pytest.approx(1 - 2 / d, abs=1e-12)
    stats = statistics(np.stack([one_hot, constant]))
    assert np.allclose(stats["l1"], [1, d]) and np.allclose(stats["l2"], [1, 8])


def test_welch_comparison():
    rng = np.random.default_rng(0)
    result = compare_groups(rng.normal(1.0, 1, 300), rng.normal(0.0, 1, 300))
    assert result["t"] > 8 and result["p"] < 1e-6 and result["effect_size"] == pytest.approx(1.0, abs=0.2)

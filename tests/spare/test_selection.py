"""Eq. 5.5, the MI estimator, the sign rule with skipped ties, and the confidence weights."""

import numpy as np
import pytest

from thesis.spare.selection import (confidence_weights, functional_vectors, mi_mass_count, mutual_information,
                                    random_latent_vectors)


@pytest.mark.parametrize("K, k", [(0.5, 1), (0.7, 2), (0.8, 2), (0.81, 3), (1.0, 4)])
def test_eq_5_5_on_a_hand_made_mi_vector(K, k):
    assert mi_mass_count(np.array([1.0, 5.0, 1.0, 3.0]), K) == k


def test_no_mi_selects_nothing():
    assert mi_mass_count(np.zeros(5), 0.5) == 0


def test_mi_ranks_the_label_first_and_an_independent_latent_near_zero():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    Z = np.c_[rng.random(400), y + 0.01 * rng.random(400), np.zeros(400)]
    mi = mutual_information(Z, y, seed=0)
    assert mi.argmax() == 1 and mi[1] > 0.5
    assert mi[0] < 0.05 and mi[2] == 0


def test_functional_vectors_signs_ties_and_disjoint_supports():
    Z_C = np.array([[2.0, 0.0, 1.0, 0.0], [4.0, 0.0, 1.0, 0.0]])
    Z_M = np.array([[0.0, 3.0, 1.0, 0.0], [0.0, 5.0, 1.0, 0.0]])
    mi = np.array([0.5, 0.4, 0.9, 0.0])  # latent 2 has the top MI but equal means: skipped
    v = functional_vectors(Z_C, Z_M, K=0.6, mi=mi)
    assert v.k == 2
    assert v.context_latents == [0] and v.memory_latents == [1]
    assert np.allclose(v.z_context.numpy(), [3.0, 0, 0, 0]) and np.allclose(v.z_memory.numpy(), [0, 4.0, 0, 0])
    assert (v.z_context * v.z_memory).sum() == 0
    assert (v.z_context >= 0).all() and (v.z_memory >= 0).all()


def test_weighted_means_follow_the_weights():
    Z_C = np.array([[1.0, 0.0], [3.0, 0.0]])
    Z_M = np.array([[0.0, 2.0], [0.0, 2.0]])
    v = functional_vectors(Z_C, Z_M, K=1.0, w_C=np.array([0.75, 0.25]), mi=np.array([1.0, 1.0]))
    assert np.isclose(float(v.z_context[0]), 1.5)


def test_confidence_weights():
    own, other = np.array([0.1, 1.0]), np.array([2.0, 2.0])  # sample 0 is the more confident one
    code = confidence_weights(own, other, "code")
    assert code[0] > code[1] and np.isclose(code.sum(), 1)
    thesis = confidence_weights(own, other, "thesis")
    assert np.allclose(thesis, (-own) / (-own - other))  # the literal equation: small when confident
    assert thesis[0] < thesis[1]
    assert np.allclose(confidence_weights(own, other, "none"), 0.5)
    with pytest.raises(ValueError):
        confidence_weights(own, other, "other")


def test_random_latent_control_matches_counts():
    rng = np.random.default_rng(0)
    v = random_latent_vectors(rng.random((5, 20)), rng.random((6, 20)), 3, 2, seed=1)
    assert len(v.context_latents) == 3 and len(v.memory_latents) == 2
    assert not set(v.context_latents) & set(v.memory_latents)

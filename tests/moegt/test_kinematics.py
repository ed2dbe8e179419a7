"""Delta R, four-vectors and pair masses against hand-computed values and invariances."""

import numpy as np
import pandas as pd
import pytest

from thesis.moegt.kinematics import b_pair_kinematics, delta_r, four_vector, invariant_mass, wrap_phi

Z_MASS = 91.1876


def test_wrap_phi_maps_into_minus_pi_exclusive_to_pi_inclusive():
    raw = np.array([0.0, np.pi, -np.pi, 1.5 * np.pi, -1.5 * np.pi, 2 * np.pi + 0.1, -0.3])
    expected = np.array([0.0, np.pi, np.pi, -0.5 * np.pi, 0.5 * np.pi, 0.1, -0.3])
    assert wrap_phi(raw) == pytest.approx(expected, abs=1e-12)


def test_delta_r_wraps_across_plus_minus_pi():
    # phi 3.0 and -3.0 are 2 pi - 6 = 0.283 apart, not 6
    assert delta_r(0.0, 3.0, 0.0, -3.0) == pytest.approx(2 * np.pi - 6.0)
    assert delta_r(0.5, 3.0, -0.5, -3.0) == pytest.approx(np.hypot(1.0, 2 * np.pi - 6.0))
    assert delta_r(1.2, 0.4, 1.2, 0.4) == 0.0


def test_four_vector_has_its_mass_and_the_stated_components():
    v = four_vector(30.0, 0.7, -1.1, 4.75)
    assert v[1:] == pytest.approx([30 * np.cos(-1.1), 30 * np.sin(-1.1), 30 * np.sinh(0.7)])
    assert np.sqrt(v[0] ** 2 - (v[1:] ** 2).sum()) == pytest.approx(4.75)
    assert invariant_mass(v, np.zeros(4)) == pytest.approx(4.75)


def test_back_to_back_massless_pair():
    # opposite in phi and in eta: the momenta cancel, m = E1 + E2 = 2 pT cosh(eta)
    first, second = four_vector(50.0, 0.8, 0.3, 0.0), four_vector(50.0, -0.8, 0.3 - np.pi, 0.0)
    assert invariant_mass(first, second) == pytest.approx(100 * np.cosh(0.8))


def test_z_like_pair_at_rest():
    half = Z_MASS / 2
    assert invariant_mass(four_vector(half, 0.0, 1.0, 0.0), four_vector(half, 0.0, 1.0 - np.pi, 0.0)) == \
        pytest.approx(Z_MASS)


def test_massless_pairs_match_the_collider_formula_and_are_vectorised():
    rng = np.random.default_rng(0)
    pt1, pt2 = rng.uniform(20, 200, (2, 100))
    eta1, eta2 = rng.normal(0, 1.5, (2, 100))
    phi1, phi2 = rng.uniform(-np.pi, np.pi, (2, 100))
    mass = invariant_mass(four_vector(pt1, eta1, phi1, 0.0), four_vector(pt2, eta2, phi2, 0.0))
    # m^2 = 2 pT1 pT2 (cosh(d eta) - cos(d phi)) for massless objects
    assert mass.shape == (100,)
    assert mass == pytest.approx(np.sqrt(2 * pt1 * pt2 * (np.cosh(eta1 - eta2) - np.cos(phi1 - phi2))), rel=1e-9)


def test_beam_boost_and_rotation_leave_mass_and_delta_r_unchanged():
    # for massless objects (eta = rapidity) a boost along the beam shifts every eta by the same
    # amount; a rotation about the beam shifts every phi
    pt, eta, phi, m = np.array([60.0, 45.0]), np.array([0.3, -1.2]), np.array([2.9, -2.8]), np.zeros(2)
    mass = invariant_mass(four_vector(pt[0], eta[0], phi[0], m[0]), four_vector(pt[1], eta[1], phi[1], m[1]))
    shifted_eta, rotated_phi = eta + 1.7, wrap_phi(phi + 2.0)
    moved = invariant_mass(four_vector(pt[0], shifted_eta[0], rotated_phi[0], m[0]),
                           four_vector(pt[1], shifted_eta[1], rotated_phi[1], m[1]))
    assert moved == pytest.approx(mass)
    assert delta_r(shifted_eta[0], rotated_phi[0], shifted_eta[1], rotated_phi[1]) == \
        pytest.approx(delta_r(eta[0], phi[0], eta[1], phi[1]))


def test_b_pair_kinematics_reads_the_release_columns():
    half = Z_MASS / 2
    events = pd.DataFrame({"pTb1": [half, 40.0], "etab1": [0.0, 0.0], "phib1": [0.5, 3.0], "b1m": [0.0, 0.0],
                           "pTb2": [half, 40.0], "etab2": [0.0, 0.0], "phib2": [0.5 - np.pi, -3.0], "b2m": [0.0, 0.0]})
    out = b_pair_kinematics(events)
    assert out.delta_r_bb.to_numpy() == pytest.approx([np.pi, 2 * np.pi - 6.0])
    assert out.m_bb.iloc[0] == pytest.approx(Z_MASS)
    assert out.m_bb.iloc[1] == pytest.approx(np.sqrt(2 * 40 * 40 * (1 - np.cos(6.0))))

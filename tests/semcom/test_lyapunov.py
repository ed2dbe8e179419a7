"""Alg. 2: decisions, queue, long-term constraint on a simulated channel trace."""

import itertools

import numpy as np
import pytest

from thesis.semcom.lyapunov import decide, deploy, draw_snr, nearest, queue_update, select, simulate


def synthetic_problem(seed: int = 0):
    """Configurations whose accuracy grows with rho and SNR (like the real Lambda tables)."""
    rng = np.random.default_rng(seed)
    rho = np.sort(rng.uniform(0.002, 0.5, 30))
    snr_grid = np.arange(-20.0, 20.1, 2.5)
    proxy = (1 - np.exp(-rho[:, None] * 40)) * (1 / (1 + np.exp(-snr_grid[None, :] / 4))) * 0.9 + 0.05
    return proxy, rho, snr_grid


def test_decision_is_the_brute_force_argmin():
    proxy, rho, _ = synthetic_problem()
    rng = np.random.default_rng(1)
    for _ in range(20):
        queue, v, s = rng.uniform(0, 50, 3), rng.uniform(1, 100, 3), rng.integers(0, proxy.shape[1])
        chosen = decide(np.tile(proxy[:, s], (3, 1)), rho, queue, v)
        for k in range(3):
            costs = [-v[k] * proxy[c, s] + queue[k] * rho[c] for c in range(len(rho))]
            assert chosen[k] == int(np.argmin(costs))


def test_queue_never_negative():
    queue = queue_update(np.array([0.0, 0.1, 5.0]), np.array([10.0, 10.0, 10.0]), np.array([0.0, 0.0, 0.6]),
                         np.array([0.05, 0.05, 0.05]))
    assert np.allclose(queue, [0.0, 0.0, 10.5])


@pytest.mark.parametrize("gamma", [0.01, 0.05])
def test_time_average_constraint_met_on_simulated_trace(gamma):
    proxy, rho, grid = synthetic_problem()
    rng = np.random.default_rng(2)
    slots = 20000
    index = nearest(grid, draw_snr(10.0, 2.5, slots, rng))[None]
    v, mu = np.array([10.0, 10.0]), np.array([1.0, 100.0])
    sim = simulate(proxy, rho, np.repeat(index, 2, 0), v, mu, np.full(2, gamma), tail=1000, every=100)
    assert (np.asarray(sim.trajectory["queue"]) >= 0).all()
    average = sim.trajectory["avg_rho"][-1]
    # telescoping eq. 3.35: sum_t (rho(t) - Gamma) <= Z(T) / mu, so the excess vanishes like 1 / T
    assert (average <= gamma + sim.final_queue / (mu * slots) + 1e-12).all()
    assert average[1] <= gamma * 1.02
    # the controller trades: a looser threshold buys proxy accuracy
    loose = simulate(proxy, rho, index, v[1:], mu[1:], np.array([gamma * 4]), tail=1000)
    assert loose.tail_accuracy[0] > sim.tail_accuracy[1]


def test_decisions_depend_on_mu_over_v_only():
    proxy, rho, grid = synthetic_problem()
    index = nearest(grid, draw_snr(10.0, 2.5, 3000, np.random.default_rng(3)))
    a = simulate(proxy, rho, index[None], np.array([100.0]), np.array([1.0]), np.array([0.02]), tail=500)
    b = simulate(proxy, rho, index[None], np.array([1000.0]), np.array([10.0]), np.array([0.02]), tail=500)
    assert a.tail_rho[0] == pytest.approx(b.tail_rho[0]) and a.tail_accuracy[0] == pytest.approx(b.tail_accuracy[0])


def test_search_and_deployment_meet_the_constraint():
    proxy, rho_mean, grid = synthetic_problem()
    rng = np.random.default_rng(4)
    n = 400
    rho_sample = rho_mean[None, :] * rng.uniform(0.9, 1.1, (n, len(rho_mean)))
    correct = rng.uniform(size=(n, len(rho_mean), len(grid))) < proxy[None]
    pairs = list(itertools.product([1.0, 10.0, 100.0], [1.0, 10.0]))
    gamma = 0.02
    snr = draw_snr(10.0, 2.5, 20000, rng)
    index = np.tile(nearest(grid, snr), (len(pairs), 1))
    v, mu = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
    sim = simulate(proxy, rho_mean, index, v, mu, np.full(len(pairs), gamma), tail=1000)
    best = select(sim.tail_rho, sim.tail_accuracy, gamma)
    assert best is not None and sim.tail_rho[best] <= gamma
    out = deploy(proxy, rho_mean, correct, rho_sample, grid, draw_snr(10.0, 2.5, 4000, rng),
                 rng.integers(0, n, 4000), v[best], mu[best], gamma, queue0=float(sim.final_queue[best]))
    assert out["avg_rho"] <= gamma * 1.02
    assert (out["queue"] >= 0).all()
    assert select(sim.tail_rho, sim.tail_accuracy, 1e-5) is None      # infeasible threshold: "-"

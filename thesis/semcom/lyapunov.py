"""Online choice of (alpha, r) under a long-term bandwidth constraint (Sec. 3.3.4, Alg. 2).

Each slot t the controller observes SNR(t) and picks the configuration gamma*(t) of a finite set
C minimising -V * Lambda(gamma, SNR(t)) + Z(t) * rho(gamma) (eq. 3.37), then updates the virtual
queue Z(t+1) = max(0, Z(t) + mu * (rho(gamma*(t)) - Gamma_th)) (eq. 3.35). Lambda is a proxy
accuracy table measured on the training set over an SNR grid (looked up at the nearest grid
point); rho is each configuration's mean compression factor. (V, mu) are chosen by simulating
Alg. 2 for T slots and keeping the pair with the best proxy accuracy whose average rho over the
last `tail` slots meets Gamma_th; then the controller is deployed on the test set, each test
image arriving in one slot with its sampled SNR, and the queue is updated with the image's
realised rho. Everything is vectorised over (V, mu) pairs, thresholds and runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def nearest(grid: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Index of the nearest grid point for every value."""
    grid = np.asarray(grid, dtype=float)
    return np.abs(np.asarray(values, dtype=float)[..., None] - grid).argmin(-1)


def draw_snr(mean: float, std: float, slots: int, rng: np.random.Generator) -> np.ndarray:
    """An SNR trace in dB: N(mean, std^2) per slot (block fading), constant when std = 0."""
    return np.full(slots, float(mean)) if std == 0 else rng.normal(mean, std, slots)


def decide(proxy_at_snr: np.ndarray, rho: np.ndarray, queue: np.ndarray, v: np.ndarray) -> np.ndarray:
    """argmin over configurations of -V * Lambda + Z * rho (eq. 3.37), for each controller copy.

    proxy_at_snr: (K, C) proxy accuracy of every configuration at each copy's current SNR;
    rho: (C,); queue, v: (K,). Returns (K,) configuration indices."""
    return np.argmin(-v[:, None] * proxy_at_snr + queue[:, None] * rho[None, :], axis=1)


def queue_update(queue: np.ndarray, mu: np.ndarray, rho_sent: np.ndarray, threshold: np.ndarray) -> np.ndarray:
    """Z(t+1) = max(0, Z(t) + mu * (rho(t) - Gamma_th)) (eq. 3.35)."""
    return np.maximum(0.0, queue + mu * (rho_sent - threshold))


@dataclass
class Simulation:
    """Per controller copy: tail averages, final queue, and a thinned trajectory."""

    tail_rho: np.ndarray
    tail_accuracy: np.ndarray
    final_queue: np.ndarray
    trajectory: dict[str, np.ndarray]


def simulate(proxy: np.ndarray, rho: np.ndarray, snr_index: np.ndarray, v: np.ndarray, mu: np.ndarray,
             threshold: np.ndarray, tail: int, queue0: np.ndarray | None = None, every: int = 100,
             trace_of: np.ndarray | None = None) -> Simulation:
    """Alg. 2 on the proxy: K independent controller copies.

    proxy: (C, S) Lambda over the SNR grid; rho: (C,); snr_index: (M, T) grid index of the SNR per
    slot of M channel traces, copy k following trace trace_of[k] (default: trace k, M = K);
    v, mu, threshold: (K,). Returns tail averages of rho and Lambda over the last `tail` slots and
    the running averages / queue every `every` slots."""
    copies, slots = len(v), snr_index.shape[1]
    trace_of = np.arange(copies) if trace_of is None else np.asarray(trace_of)
    queue = np.zeros(copies) if queue0 is None else queue0.astype(float).copy()
    rho_sum, acc_sum = np.zeros(copies), np.zeros(copies)
    tail_rho, tail_acc = np.zeros(copies), np.zeros(copies)
    rows = np.arange(copies)
    trajectory: dict[str, list] = {"t": [], "queue": [], "avg_rho": [], "avg_accuracy": []}
    for t in range(slots):
        at_snr = proxy[:, snr_index[trace_of, t]].T
        choice = decide(at_snr, rho, queue, v)
        sent = rho[choice]
        gained = at_snr[rows, choice]
        queue = queue_update(queue, mu, sent, threshold)
        rho_sum += sent
        acc_sum += gained
        if t >= slots - tail:
            tail_rho += sent
            tail_acc += gained
        if (t + 1) % every == 0 or t == slots - 1:
            trajectory["t"].append(t + 1)
            trajectory["queue"].append(queue.copy())
            trajectory["avg_rho"].append(rho_sum / (t + 1))
            trajectory["avg_accuracy"].append(acc_sum / (t + 1))
    count = min(tail, slots)
    return Simulation(tail_rho / count, tail_acc / count, queue,
                      {k: np.asarray(val) for k, val in trajectory.items()})


def select(tail_rho: np.ndarray, tail_accuracy: np.ndarray, threshold: float, slack: float = 1.0) -> int | None:
    """Index of the best proxy accuracy among copies with tail rho <= threshold * slack (None: failed)."""
    feasible = np.flatnonzero(tail_rho <= threshold * slack + 1e-12)
    return None if feasible.size == 0 else int(feasible[np.argmax(tail_accuracy[feasible])])


def deploy(proxy: np.ndarray, rho_mean: np.ndarray, correct: np.ndarray, rho_sample: np.ndarray,
           snr_grid: np.ndarray, snr_trace: np.ndarray, samples: np.ndarray, v: float, mu: float,
           threshold: float, queue0: float = 0.0) -> dict[str, np.ndarray | float]:
    """Alg. 2 on the test stream: slot t brings test image samples[t] at SNR snr_trace[t].

    Decisions use the proxy (C, S) and mean rho (C,); the queue moves with the image's realised
    rho_sample[i, c]; correct[i, c, s] says whether image i is classified right by configuration
    c at grid SNR s. Returns accuracy, time-average rho, and the per-slot choices and queue."""
    index = nearest(snr_grid, snr_trace)
    queue = float(queue0)
    choices, queues, sent, hits = [], [], [], []
    for t, (i, k) in enumerate(zip(samples, index)):
        c = int(np.argmin(-v * proxy[:, k] + queue * rho_mean))
        r = float(rho_sample[i, c])
        queue = max(0.0, queue + mu * (r - threshold))
        choices.append(c)
        queues.append(queue)
        sent.append(r)
        hits.append(bool(correct[i, c, k]))
    return {"accuracy": float(np.mean(hits)), "avg_rho": float(np.mean(sent)), "choices": np.array(choices),
            "queue": np.array(queues), "rho": np.array(sent), "correct": np.array(hits)}

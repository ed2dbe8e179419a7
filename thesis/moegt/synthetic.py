"""A seeded generator of collision events in the schema of the ATLAS release (spec A.8).

Signal events carry a Higgs boson decaying to two b-jets (m_bb near 125 GeV, small separation
Delta R_bb at high Higgs pT) and extra missing energy growing with the mass splitting Delta m;
background b-jets come independently from two top decays (broad m_bb, large Delta R). `separation`
in [0, 1] sets the share of signal events drawn with the signal recipe (the rest use the
background recipe, so they are indistinguishable) and scales the extra missing energy, which
controls how separable the classes are. All units GeV. The generator writes the release's
42 raw columns (-99 for a missing j3) plus `dm` for signal, which the real data does not have.

These properties are ours: a model that finds them validates the pipeline, not the physics.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from thesis.moegt.graphs import RAW_COLUMNS

HIGGS_MASS = 125.0
DELTA_M_VALUES = (150.0, 200.0, 300.0, 500.0, 700.0)
DELTA_M_WEIGHTS = (0.35, 0.30, 0.15, 0.12, 0.08)
MISSING = -99.0


def higgs_b_jets(rng: np.random.Generator, dm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(pT, eta, phi), each (events, 2): H -> b b-bar, isotropic in the Higgs frame, boosted to the lab,
    pT smeared by 10 %."""
    n = len(dm)
    pt_h = rng.gamma(2.0, 0.3 * dm + 40.0)
    eta_h, phi_h = rng.normal(0.0, 1.2, n), rng.uniform(-np.pi, np.pi, n)
    p_h = np.stack([pt_h * np.cos(phi_h), pt_h * np.sin(phi_h), pt_h * np.sinh(eta_h)], axis=1)
    e_h = np.sqrt((p_h ** 2).sum(1) + HIGGS_MASS ** 2)
    cos_t, azimuth = rng.uniform(-1, 1, n), rng.uniform(-np.pi, np.pi, n)
    sin_t = np.sqrt(1 - cos_t ** 2)
    direction = np.stack([sin_t * np.cos(azimuth), sin_t * np.sin(azimuth), cos_t], axis=1)
    beta = p_h / e_h[:, None]
    gamma = e_h / HIGGS_MASS
    beta2 = (beta ** 2).sum(1).clip(1e-12)
    momenta = []
    for sign in (1.0, -1.0):
        p_rest = sign * direction * HIGGS_MASS / 2
        e_rest = HIGGS_MASS / 2
        along = (p_rest * beta).sum(1)
        p_lab = p_rest + ((gamma - 1) * along / beta2 + gamma * e_rest)[:, None] * beta
        momenta.append(p_lab)
    p = np.stack(momenta, axis=1)
    pt = np.hypot(p[..., 0], p[..., 1]) * np.clip(rng.normal(1.0, 0.1, (n, 2)), 0.5, None)
    eta = np.arcsinh(p[..., 2] / np.hypot(p[..., 0], p[..., 1]).clip(1e-9))
    return pt, eta, np.arctan2(p[..., 1], p[..., 0])


def top_b_jets(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(pT, eta, phi), each (events, 2): two independent b-jets from top decays."""
    return rng.gamma(2.0, 35.0, (n, 2)) + 20.0, rng.normal(0.0, 1.3, (n, 2)), rng.uniform(-np.pi, np.pi, (n, 2))


def generate_process(process: str, n: int, rng: np.random.Generator, separation: float = 0.8) -> pd.DataFrame:
    """`n` events of `process` ("signal", "ttbar" or "singletop") as a table of RAW_COLUMNS (+ `dm`)."""
    if not 0.0 <= separation <= 1.0:
        raise ValueError(f"separation must lie in [0, 1], got {separation}")
    signal = process == "signal"
    dm = rng.choice(DELTA_M_VALUES, size=n, p=DELTA_M_WEIGHTS) if signal else np.zeros(n)
    b_pt, b_eta, b_phi = top_b_jets(rng, n)
    if signal:
        use_higgs = rng.random(n) < separation
        h_pt, h_eta, h_phi = higgs_b_jets(rng, dm)
        b_pt, b_eta, b_phi = (np.where(use_higgs[:, None], h, b) for h, b in ((h_pt, b_pt), (h_eta, b_eta),
                                                                              (h_phi, b_phi)))
    order = np.argsort(-b_pt, axis=1)
    b_pt, b_eta, b_phi = (np.take_along_axis(a, order, 1) for a in (b_pt, b_eta, b_phi))
    b_q = rng.choice([5, 4, 3], size=(n, 2), p=[0.6, 0.3, 0.1]).astype(float)
    b_m = rng.gamma(3.0, 4.0, (n, 2)) + 0.05 * b_pt

    has_j3 = rng.random(n) < (0.45 if signal else 0.55)
    light = (rng.gamma(2.0, 20.0, n) + 20.0, rng.normal(0.0, 1.6 if signal else 1.3, n),
             rng.uniform(-np.pi, np.pi, n), rng.choice([1, 2, 3], size=n, p=[0.6, 0.3, 0.1]).astype(float))
    jets = np.stack([np.stack([b_pt[:, i], b_eta[:, i], b_phi[:, i], b_q[:, i]], 1) for i in range(2)]
                    + [np.stack(light, 1)], axis=1)  # (n, 3 candidates, 4)
    jets[~has_j3, 2, 0] = -np.inf
    jets = np.take_along_axis(jets, np.argsort(-jets[..., 0], axis=1)[..., None], 1)
    jets[~has_j3, 2] = MISSING

    lep_pt = rng.gamma(2.0, 25.0, n) + 25.0
    lep_eta, lep_phi = np.clip(rng.normal(0.0, 1.1, n), -2.46, 2.46), rng.uniform(-np.pi, np.pi, n)
    met_scale = 50.0 + separation * (10.0 + 0.25 * dm) if signal else np.full(n, 50.0)
    met = rng.gamma(2.0, met_scale)
    jet_sum = np.where(has_j3, jets[:, 2, 0], 0.0) + jets[:, 0, 0] + jets[:, 1, 0]
    table = {}
    for j in range(3):
        for name, col in zip(("pTj{}", "etaj{}", "phij{}", "j{}_quantile"), range(4)):
            table[name.format(j + 1)] = jets[:, j, col]
    for i in range(2):
        table.update({f"pTb{i + 1}": b_pt[:, i], f"etab{i + 1}": b_eta[:, i], f"phib{i + 1}": b_phi[:, i],
                      f"b{i + 1}_quantile": b_q[:, i], f"b{i + 1}m": b_m[:, i]})
    table.update({"pTl1": lep_pt, "etal1": lep_eta, "phil1": lep_phi, "ETMiss": met,
                  "ETMissPhi": rng.uniform(-np.pi, np.pi, n),
                  "metsig_New": met / np.sqrt(jet_sum) + rng.normal(0.0, 0.5, n)})
    frame = pd.DataFrame(table)[list(RAW_COLUMNS)]
    if signal:
        frame["dm"] = dm
    return frame


def generate_release(event_counts: dict[str, int], seed: int = 0, separation: float = 0.8) -> dict[str, pd.DataFrame]:
    """One table per process, each from its own generator stream derived from `seed`."""
    streams = np.random.SeedSequence(seed).spawn(len(event_counts))
    return {process: generate_process(process, int(n), np.random.default_rng(stream), separation)
            for (process, n), stream in zip(sorted(event_counts.items()), streams)}

"""Two-object kinematics of the Section 5.2 GCN analysis (thesis S4, Fig. 5.30): the angular
distance Delta R and the invariant mass of a pair of reconstructed objects given as
(pT, eta, phi, m), vectorised over events (NumPy broadcasting).

Delta R = sqrt(Delta eta^2 + Delta phi^2) with Delta phi wrapped to (-pi, pi]; a four-vector is
E = sqrt(pT^2 cosh^2 eta + m^2), p = (pT cos phi, pT sin phi, pT sinh eta), and the pair's mass is
m^2 = (E1 + E2)^2 - |p1 + p2|^2 (negative rounding residues are clipped to 0). Units follow the
inputs (GeV in the release).
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def wrap_phi(delta_phi: np.ndarray) -> np.ndarray:
    """Azimuthal differences mapped to (-pi, pi]."""
    return np.pi - np.mod(np.pi - np.asarray(delta_phi, dtype=float), 2 * np.pi)


def delta_r(eta1, phi1, eta2, phi2) -> np.ndarray:
    """Angular distance sqrt(Delta eta^2 + Delta phi^2) with the wrapped Delta phi."""
    return np.hypot(np.asarray(eta1, dtype=float) - eta2, wrap_phi(np.asarray(phi1, dtype=float) - phi2))


def four_vector(pt, eta, phi, mass) -> np.ndarray:
    """(..., 4) array (E, px, py, pz) from transverse momentum, pseudorapidity, azimuth and mass."""
    pt, eta, phi, mass = (np.asarray(a, dtype=float) for a in (pt, eta, phi, mass))
    energy = np.sqrt((pt * np.cosh(eta)) ** 2 + mass ** 2)
    return np.stack(np.broadcast_arrays(energy, pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)), axis=-1)


def invariant_mass(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Invariant mass of two (..., 4) four-vectors (E, px, py, pz)."""
    total = np.asarray(first) + np.asarray(second)
    squared = total[..., 0] ** 2 - (total[..., 1:] ** 2).sum(-1)
    return np.sqrt(np.clip(squared, 0.0, None))


def b_pair_kinematics(events: pd.DataFrame) -> pd.DataFrame:
    """Delta R(b1, b2) and m(b1, b2) per event from the release's columns (pTb*, etab*, phib*, and the
    b-jet masses b1m, b2m of Table 5.3, feature F5)."""
    b1 = four_vector(events.pTb1, events.etab1, events.phib1, events.b1m)
    b2 = four_vector(events.pTb2, events.etab2, events.phib2, events.b2m)
    return pd.DataFrame({"delta_r_bb": delta_r(events.etab1, events.phib1, events.etab2, events.phib2),
                         "m_bb": invariant_mass(b1, b2)}, index=events.index)

"""Data of the SpARE analysis figures, independent of any model: a subsample of the collected
examples for the N sweep (Fig. 5.10: how many examples the MI ranking and the mean vectors need),
the cumulative MI share by number of ranked latents (Figs. 5.11-5.13, the curve Eq. 5.5 cuts at K),
and the layer list of the single-layer sweep (Fig. 5.5)."""

from __future__ import annotations

import numpy as np
import torch

from thesis.core.errors import ConfigError
from thesis.spare.pipeline import Collected


def subsample(collected: Collected, n: int, seed: int) -> Collected:
    """N labelled examples, half per behaviour (fewer if a group is smaller), in collection order;
    every labelled example when N reaches their number, so the largest N reproduces the full run."""
    labelled = np.flatnonzero(collected.label >= 0)
    if n >= len(labelled):
        pick = labelled
    else:
        rng = np.random.default_rng(seed)
        context, memory = np.flatnonzero(collected.label == 1), np.flatnonzero(collected.label == 0)
        pick = np.sort(np.r_[rng.choice(context, min(n // 2, len(context)), replace=False),
                             rng.choice(memory, min(n - n // 2, len(memory)), replace=False)])
    index = torch.as_tensor(pick)
    return Collected({layer: acts[index] for layer, acts in collected.acts.items()},
                     [collected.predictions[i] for i in pick], collected.label[pick],
                     collected.loss_context[pick], collected.loss_memory[pick])


def mi_curve(mi: np.ndarray, max_k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(k = 1..max_k, share of the total MI held by the k highest-MI latents); empty if there is no MI."""
    total = float(np.sum(mi))
    if total <= 0:
        return np.zeros(0, int), np.zeros(0)
    share = np.cumsum(np.sort(np.asarray(mi, float))[::-1]) / total
    share = share[:max_k] if max_k else share
    return np.arange(1, len(share) + 1), share


def latents_for_share(mi: np.ndarray, shares: list[float]) -> list[int]:
    """Number of ranked latents needed to reach each MI share K (Eq. 5.5 at K; the y-axis of Figs. 5.11-5.13)."""
    k, share = mi_curve(mi)
    return [int(k[np.searchsorted(share, K - 1e-12)]) if len(k) else 0 for K in shares]


def sweep_layers(spec, n_layers: int) -> list[int]:
    """`all` = every decoder layer, else the listed layers (each checked against the model's depth)."""
    layers = list(range(n_layers)) if spec == "all" else [int(layer) for layer in spec]
    bad = [layer for layer in layers if not 0 <= layer < n_layers]
    if bad:
        raise ConfigError(f"method.sweep_layers has layers {bad} outside 0..{n_layers - 1} of this model")
    return layers

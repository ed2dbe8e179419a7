"""Fig. 5.6 analogue: how the residual stream changes after SpARE at one layer. A conflict probe per
layer (trained on dev prompts: conflicting vs consistent context) scores the test conflict prompts
without control and steered to context / memory, and the hidden-state kurtosis is tracked by layer."""

from __future__ import annotations

import numpy as np

from thesis.spare.generation import generate
from thesis.spare.hooks import Capture, EditFn
from thesis.spare.probe import ProbeConfig, probe_scores, train_probe
from thesis.spare.stats import kurtosis


def last_hidden(model, tokenizer, texts: list[str], layers: list[int], batch_size: int,
                edits: dict[int, EditFn] | None = None) -> dict[int, np.ndarray]:
    capture = Capture(model, layers)
    generate(model, tokenizer, texts, 1, batch_size, edits=edits, capture=capture)
    return {layer: value.numpy() for (_, layer), value in capture.result().items()}


def steering_trajectory(model, tokenizer, dev_conflict: list[str], dev_consistent: list[str], test_conflict: list[str],
                        edits_for, layers: list[int], batch_size: int, config: ProbeConfig, seed: int) -> list[dict]:
    """Rows (steering, layer, probe_score, kurtosis), steering in none / context / memory."""
    positive = last_hidden(model, tokenizer, dev_conflict, layers, batch_size)
    negative = last_hidden(model, tokenizer, dev_consistent, layers, batch_size)
    y = np.r_[np.ones(len(dev_conflict)), np.zeros(len(dev_consistent))]
    probes = {layer: train_probe(np.vstack([positive[layer], negative[layer]]), y, config, seed) for layer in layers}
    rows = []
    for steering in ("none", "context", "memory"):
        acts = last_hidden(model, tokenizer, test_conflict, layers, batch_size,
                           None if steering == "none" else edits_for(steering))
        for layer in layers:
            rows.append({"steering": steering, "layer": layer,
                         "probe_score": float(probe_scores(probes[layer], acts[layer]).mean()),
                         "kurtosis": float(np.nanmean(kurtosis(acts[layer].astype(np.float64))))})
    return rows


def trajectory_effects(rows: list[dict], edited_layer: int) -> tuple[float, float]:
    """(drop of the probe score when steering to memory, rise of kurtosis when steering to context),
    averaged over the layers after the edited one (NaN if there are none)."""
    after = sorted({r["layer"] for r in rows if r["layer"] > edited_layer})
    if not after:
        return float("nan"), float("nan")
    value = {(r["steering"], r["layer"]): r for r in rows}
    drop = np.mean([value[("none", l)]["probe_score"] - value[("memory", l)]["probe_score"] for l in after])
    rise = np.mean([value[("context", l)]["kurtosis"] - value[("none", l)]["kurtosis"] for l in after])
    return float(drop), float(rise)

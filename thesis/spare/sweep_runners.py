"""Runners of the SpARE sweeps on a real model (same split and collection as `run_spare`):

- `run_spare_layerwise` (Fig. 5.5): SpARE edits one layer at a time, for each layer of
  `method.sweep_layers` (that layer's SAE loaded, used and released in turn).
- `run_spare_n_sweep` (Fig. 5.10): N labelled dev examples for the MI ranking (means from all) and
  for the mean vectors (MI from all), SpARE at `method.layers` re-evaluated for each N.
- `run_spare_mi_distribution` (Figs. 5.11-5.13): the cumulative MI share by number of ranked
  latents per layer, and how many latents each K of the thesis's search range keeps.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from thesis.core.errors import CheckpointError
from thesis.core.rundir import RunDir
from thesis.spare.hooks import decoder_layers
from thesis.spare.pipeline import Collected, layer_vectors
from thesis.spare.runner import EM_KEYS
from thesis.spare.selection import FunctionalVectors
from thesis.spare.setup import load_saes
from thesis.spare.steering import SpareEdit
from thesis.spare.study import Study, prepare
from thesis.spare.sweep_figures import plot_layerwise, plot_mi_curves, plot_n_sweep
from thesis.spare.sweeps import latents_for_share, mi_curve, subsample, sweep_layers


def spare_edits(cfg: DictConfig, saes: dict, vectors: dict[int, FunctionalVectors]):
    """`direction -> {layer: SpareEdit}` for the given layers' vectors, with the run's alpha(s)."""
    method = cfg.method

    def alpha(direction: str) -> float:
        return method.alpha_memory if direction == "memory" and method.alpha_memory is not None else method.alpha

    return lambda direction: {layer: SpareEdit(saes[layer], v.z_context, v.z_memory, direction, alpha(direction),
                                               method.alpha_placement, "full", cfg.model.sae.code)
                              for layer, v in vectors.items()}


def vectors_of(cfg: DictConfig, collected: Collected, sae, layer: int,
               mi: np.ndarray | None = None) -> FunctionalVectors:
    """One layer's SpARE vectors at the run's K, weighting and code (MI estimated unless given)."""
    method = cfg.method
    return layer_vectors(collected, sae, layer, method.K, method.weighting, cfg.model.sae.code, cfg.seed, mi=mi,
                         n_jobs=method.mi_jobs)


def seed_means(rows: list[dict], by: list[str]) -> pd.DataFrame:
    return pd.DataFrame(rows).groupby(by, dropna=False)[list(EM_KEYS)].mean()


def layers_of(study: Study) -> list[int]:
    """The swept layers, each checked to have its SAE on disk before the (long) collection starts."""
    layers = sweep_layers(study.cfg.method.sweep_layers, len(decoder_layers(study.model)))
    sae = study.cfg.model.sae
    missing = [layer for layer in layers if not (Path(sae.root) / sae.pattern.format(layer=layer)).exists()]
    if missing:
        raise CheckpointError(f"no SAE for layers {missing} under {sae.root} ({sae.pattern}): download them "
                              "(thesis/spare/README.md) or list the layers that have one in method.sweep_layers")
    return layers


def device_of_model(study: Study):
    return next(study.model.parameters()).device


def run_spare_layerwise(cfg: DictConfig, run: RunDir) -> dict[str, object]:
    study = prepare(cfg)
    layers = layers_of(study)
    collected = study.collect(layers)
    rows = [{"method": "no_control", "layer": None, **r} for r in study.evaluate()]
    latents = []
    for layer in layers:
        saes = load_saes(cfg.model.sae, [layer], device_of_model(study))
        v = vectors_of(cfg, collected, saes[layer], layer)
        rows += [{"method": "spare", "layer": layer, **r} for r in study.evaluate(spare_edits(cfg, saes, {layer: v}))]
        latents.append({"layer": layer, "k": v.k, "n": saes[layer].n, "n_context": len(v.context_latents),
                        "n_memory": len(v.memory_latents)})
        del saes
    run.write_table("layerwise", rows)
    run.write_table("latents", latents)
    frame = pd.DataFrame(rows)
    none = frame[frame.method == "no_control"][list(EM_KEYS)].mean()
    steered = seed_means([r for r in rows if r["method"] == "spare"], ["layer"])
    plot_layerwise(steered, none, run.figures_dir / "layerwise",
                   f"{cfg.model.name} on {cfg.data.name}: SpARE at one layer")
    metrics: dict[str, object] = {"no_control/em_c": float(none.em_c), "no_control/em_m": float(none.em_m),
                                  "best_layer/em_c": int(steered.em_c.idxmax()),
                                  "best_layer/em_m": int(steered.em_m.idxmax())}
    for layer, row in steered.iterrows():
        metrics[f"layer{layer}/em_c"], metrics[f"layer{layer}/em_m"] = float(row.em_c), float(row.em_m)
    return metrics


def n_sweep_vectors(cfg: DictConfig, collected: Collected, subset: Collected, saes: dict,
                    full: dict[int, FunctionalVectors], varied: str) -> dict[int, FunctionalVectors]:
    """Vectors with the MI ranking (`varied="mi"`) or the mean vectors (`"means"`) from `subset` only."""
    if varied == "mi":
        return {layer: vectors_of(cfg, collected, saes[layer], layer, mi=vectors_of(cfg, subset, saes[layer], layer).mi)
                for layer in full}
    if varied == "means":
        return {layer: vectors_of(cfg, subset, saes[layer], layer, mi=full[layer].mi) for layer in full}
    raise ValueError(f"method.n_sweep_varied has {varied!r}: use mi or means")


def run_spare_n_sweep(cfg: DictConfig, run: RunDir) -> dict[str, object]:
    method = cfg.method
    study = prepare(cfg)
    layers = list(method.layers)
    collected = study.collect(layers)
    saes = load_saes(cfg.model.sae, layers, device_of_model(study))
    full = {layer: vectors_of(cfg, collected, saes[layer], layer) for layer in layers}
    n_all = int((collected.label >= 0).sum())
    rows = [{"varied": "none", "n": 0, "n_used": 0, **r} for r in study.evaluate()]
    rows += [{"varied": "all", "n": n_all, "n_used": n_all, **r} for r in study.evaluate(spare_edits(cfg, saes, full))]
    for n in method.n_sweep:
        subset = subsample(collected, int(n), cfg.seed)
        for varied in method.n_sweep_varied:
            given = n_sweep_vectors(cfg, collected, subset, saes, full, varied)
            rows += [{"varied": varied, "n": int(n), "n_used": len(subset.label), **r}
                     for r in study.evaluate(spare_edits(cfg, saes, given))]
    run.write_table("n_sweep", rows)
    means = seed_means(rows, ["varied", "n"])
    plot_n_sweep(means, run.figures_dir / "n_sweep", f"{cfg.model.name} on {cfg.data.name}: examples N")
    metrics: dict[str, object] = {"n_labelled": n_all}
    for (varied, n), row in means.iterrows():
        metrics[f"{varied}/n{n}/em_c"], metrics[f"{varied}/n{n}/em_m"] = float(row.em_c), float(row.em_m)
    return metrics


def run_spare_mi_distribution(cfg: DictConfig, run: RunDir) -> dict[str, object]:
    method = cfg.method
    study = prepare(cfg)
    layers = layers_of(study)
    collected = study.collect(layers)
    curve_rows, count_rows = [], []
    for layer in layers:
        saes = load_saes(cfg.model.sae, [layer], device_of_model(study))
        mi = vectors_of(cfg, collected, saes[layer], layer).mi
        k, share = mi_curve(mi, method.max_k)
        curve_rows += [{"layer": layer, "k": int(a), "share": float(b)} for a, b in zip(k, share)]
        count_rows += [{"layer": layer, "K": float(K), "k": c, "n": saes[layer].n}
                       for K, c in zip(method.shares, latents_for_share(mi, list(method.shares)))]
        del saes
    run.write_table("mi_curve", curve_rows)
    run.write_table("latents_for_share", count_rows)
    plot_mi_curves(pd.DataFrame(curve_rows), run.figures_dir / "mi_curve",
                   f"{cfg.model.name} on {cfg.data.name}: cumulative MI")
    return {f"layer{r['layer']}/K{r['K']:g}/k": r["k"] for r in count_rows}

"""Runner `run_spare_steer_resid` (Fig. 5.6): how SpARE at one layer changes the residual stream
downstream. On the same split and collection as `run_spare`, SpARE vectors are built for
`method.layers` (the thesis: layer 15 of Llama3-8B); a conflict probe per layer is trained on dev
prompts with the conflicting (E_C) vs the original (E_M) context, and the test conflict prompts are
scored at every layer without control and steered to context / memory, with their hidden-state
kurtosis. Writes `tables/trajectory.csv` and `figures/trajectory.png`."""

from __future__ import annotations

import pandas as pd
from omegaconf import DictConfig

from thesis.core.rundir import RunDir
from thesis.spare.hooks import decoder_layers
from thesis.spare.kc_data import prompt, sample_demos
from thesis.spare.probe import ProbeConfig
from thesis.spare.setup import load_saes
from thesis.spare.study import prepare
from thesis.spare.sweep_figures import plot_trajectory
from thesis.spare.sweep_runners import device_of_model, spare_edits, vectors_of
from thesis.spare.trajectory import steering_trajectory, trajectory_effects


def run_spare_steer_resid(cfg: DictConfig, run: RunDir) -> dict[str, object]:
    method, data = cfg.method, cfg.data
    study = prepare(cfg)
    edited = list(method.layers)
    collected = study.collect(edited)
    saes = load_saes(cfg.model.sae, edited, device_of_model(study))
    vectors = {layer: vectors_of(cfg, collected, saes[layer], layer) for layer in edited}
    seed = data.demo_seeds[0]
    demos = {i.idx: sample_demos(study.dev, data.k_shot, seed, i.group) for i in study.dev}
    dev_conflict = [prompt(i, demos[i.idx], "doo", "sub_context") for i in study.dev]
    dev_consistent = [prompt(i, demos[i.idx], "doo", "org_context") for i in study.dev]
    layers = list(range(len(decoder_layers(study.model))))
    probe = ProbeConfig(l1=method.probe.l1, epochs=method.probe.epochs, penalise_bias=method.probe.penalise_bias)
    rows = steering_trajectory(study.model, study.tokenizer, dev_conflict, dev_consistent, study.test_prompts(seed),
                               spare_edits(cfg, saes, vectors), layers, method.batch_size, probe, cfg.seed)
    run.write_table("trajectory", rows)
    last = max(edited)
    plot_trajectory(pd.DataFrame(rows), last, run.figures_dir / "trajectory",
                    f"{cfg.model.name} on {data.name}: SpARE at layer(s) {', '.join(map(str, edited))}")
    drop, rise = trajectory_effects(rows, last)
    metrics: dict[str, object] = {"after_edit/probe_drop_to_memory": drop, "after_edit/kurtosis_rise_to_context": rise}
    for r in rows:
        metrics[f"{r['steering']}/layer{r['layer']}/probe_score"] = r["probe_score"]
        metrics[f"{r['steering']}/layer{r['layer']}/kurtosis"] = r["kurtosis"]
    return metrics

"""Runner `thesis.spare.resid_runner.run_resid_probe`: Section 5.3 (and the probe of 5.1.7) on a real
model: for memorised NQSwap / Macnoise questions, prompts with k demonstrations ((E_M, M), seed
42) and the test question given E_M (no conflict) or E_C (conflict); last-position hidden / mlp /
attn of every layer; conflict probe (Figs. 5.2, 5.8, 5.9, 5.31, 5.34-5.36), knowledge-selection
probe (Figs. 5.33, 5.47-5.49), kurtosis / Hoyer / Gini / L1 / L2 of D_{a_C} vs D_{a_M} by layer
(Figs. 5.7, 5.14-5.19, 5.32, 5.37-5.46). Writes tables probe.csv, stats.csv and the figures."""

from __future__ import annotations

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from thesis.core.errors import ConfigError
from thesis.core.rundir import RunDir
from thesis.spare.em import exact_match
from thesis.spare.generation import generate
from thesis.spare.hooks import KINDS, Capture, decoder_layers
from thesis.spare.kc_data import prompt, sample_demos
from thesis.spare.probe import ProbeConfig
from thesis.spare.resid import (conflict_probe, group_statistics, plot_probe_curves, plot_statistics,
                                selection_probe)
from thesis.spare.setup import context_match, load_instances, load_model, memorised

#: `method.tasks` (default both): the selection-only runs (resid_select_probe_*) skip the E_M pass
PROBE_TASKS = ("conflict", "selection")


def run_resid_probe(cfg: DictConfig, run: RunDir) -> dict[str, object]:
    method, data = cfg.method, cfg.data
    model, tokenizer = load_model(cfg)
    rows, pool = load_instances(data)
    known = memorised(model, tokenizer, rows, pool, data, method.batch_size)
    demo_pool = pool[-method.demo_pool_size:] if data.demo_split is None else pool
    layers = list(range(len(decoder_layers(model))))
    demos = {i.idx: sample_demos(demo_pool, method.k_shot, method.demo_seed, i.group) for i in known}
    tasks = list(method.get("tasks", PROBE_TASKS))
    if not tasks or set(tasks) - set(PROBE_TASKS):
        raise ConfigError(f"method.tasks={tasks} must be a non-empty subset of {list(PROBE_TASKS)}")
    features, predictions = {}, {}
    for context in ("sub_context", "org_context") if "conflict" in tasks else ("sub_context",):
        capture = Capture(model, layers, KINDS)
        predictions[context] = generate(model, tokenizer, [prompt(i, demos[i.idx], "doo", context) for i in known],
                                        data.max_new_tokens, method.batch_size, capture=capture)
        features[context] = {key: value.numpy() for key, value in capture.result().items()}
    preds = predictions["sub_context"]
    is_c = np.array([context_match(data, p, i) for p, i in zip(preds, known)])
    is_m = np.array([exact_match(p, i.org_answer) for p, i in zip(preds, known)])
    label = np.where(is_c & ~is_m, 1, np.where(is_m & ~is_c, 0, -1))
    if method.grouping == "loglik":
        from thesis.spare.generation import answer_losses

        texts = [prompt(i, demos[i.idx], "doo") for i in known]
        loss_c = answer_losses(model, tokenizer, texts, [i.sub_answer[0] for i in known], batch_size=method.batch_size)
        loss_m = answer_losses(model, tokenizer, texts, [i.org_answer[0] for i in known], batch_size=method.batch_size)
        label = (loss_c < loss_m).numpy().astype(int)
    config = ProbeConfig(l1=method.probe.l1, epochs=method.probe.epochs, penalise_bias=method.probe.penalise_bias)
    seeds = list(range(method.probe.seeds))
    groups = [i.group for i in known]
    probe_rows = []
    if "conflict" in tasks:
        probe_rows += conflict_probe(features["sub_context"], features["org_context"], groups, method.n_test_groups,
                                     config, seeds)
    if "selection" in tasks:
        probe_rows += selection_probe(features["sub_context"], label, groups, method.n_test_groups, config, seeds)
    stats = group_statistics(features["sub_context"], label)
    run.write_table("probe", probe_rows)
    run.write_table("stats", stats)
    title = f"{cfg.model.name} on {data.name}"
    plot_probe_curves(probe_rows, run.figures_dir / "probe", title)
    for kind in KINDS:
        plot_statistics(stats, run.figures_dir / f"stats_{kind}", f"{title}: D_C vs D_M", kind)
    curve = pd.DataFrame(probe_rows).groupby(["task", "kind", "layer"]).auroc.mean()
    metrics: dict[str, object] = {"n_memorised": len(known), "context_rate": 100 * float(is_c.mean()),
                                  "memory_rate": 100 * float(is_m.mean())}
    for (task, kind, layer), value in curve.items():
        metrics[f"{task}/{kind}/layer{layer}/auroc"] = float(value)
    for task in tasks:
        hidden = curve.loc[(task, "hidden")]
        metrics.update({f"{task}/hidden/peak_layer": int(hidden.idxmax()),
                        f"{task}/hidden/peak_auroc": float(hidden.max())})
    return metrics

"""Runner `thesis.spare.runner.run_spare`: SpARE and its baselines on NQSwap / Macnoise (Table 5.1,
Fig. 5.4). Steps (spec A.4-A.7): memorised set (closed-book k-shot EM) -> 128 dev question groups
and the test rest -> collect activations on dev prompts (k shots x demo seeds x styles, E_C)
grouped by behaviour -> per-layer SAE codes, MI, Eq. 5.5, z_C / z_M -> for each demonstration
seed, test prompts (3 demos (E_M, M), E_C) without control, with SpARE (both directions, every
mode) and with the baselines -> the six EM metrics per method, mean +- std over seeds.

Writes `tables/em.csv` (method, direction metrics, seed), `tables/latents.csv` (layer, k, n,
selected context / memory latents) and `table5_1.md`; returns the seed means.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from thesis.core.io import atomic_write_text
from thesis.core.rundir import RunDir
from thesis.spare.dola import dola_generate
from thesis.spare.em import exact_match, steering_metrics
from thesis.spare.generation import cad_generate, generate
from thesis.spare.kc_data import Instance, block, demo_text, dev_test_split, prompt, sample_demos
from thesis.spare.pipeline import collect, group_means, layer_vectors
from thesis.spare.sea import fit_sea_direction, neutral_rows
from thesis.spare.setup import context_match, load_instances, load_model, load_saes, memorised
from thesis.spare.steering import ActAddEdit, SpareEdit, TaskVecEdit

EM_KEYS = ("em_c", "em_m", "em_c_to_m", "em_m_to_c", "em_m_to_m", "em_c_to_c")


def collection_prompts(dev: list[Instance], collect_cfg: DictConfig) -> tuple[list[str], list[Instance]]:
    prompts, owners = [], []
    for item in dev:
        for k in collect_cfg.k_shots:
            for seed in collect_cfg.seeds:
                demos = sample_demos(dev, k, seed, item.group)
                for style in collect_cfg.styles:
                    prompts.append(prompt(item, demos, style))
                    owners.append(item)
    return prompts, owners


def score(cfg: DictConfig, predictions: list[str], items: list[Instance], rule: str | None = None):
    is_c = np.array([context_match(cfg.data, p, i, rule) for p, i in zip(predictions, items)])
    is_m = np.array([exact_match(p, i.org_answer) for p, i in zip(predictions, items)])
    return is_c, is_m


def run_spare(cfg: DictConfig, run: RunDir) -> dict[str, object]:
    method, data = cfg.method, cfg.data
    gen = dict(max_new_tokens=data.max_new_tokens, batch_size=method.batch_size)
    model, tokenizer = load_model(cfg)
    rows, pool = load_instances(data)
    known = memorised(model, tokenizer, rows, pool, data, method.batch_size)
    dev, test = dev_test_split(known, data.n_dev_groups, data.dev_seed)
    test = test[:data.max_test] if data.max_test else test
    sea_cfgs = {name: method.baselines[name] for name in ("sea_linear", "sea_sqexp") if method.baselines[name].enabled}
    layers = sorted(set(method.layers) | set(method.baselines.actadd.layers) | set(method.baselines.taskvec.layers)
                    | {layer for c in sea_cfgs.values() for layer in c.layers})
    prompts, owners = collection_prompts(dev, method.collect)
    collected = collect(model, tokenizer, prompts, [o.sub_answer for o in owners], [o.org_answer for o in owners],
                        layers, method.grouping, method.weighting, **gen)
    device = next(model.parameters()).device
    saes = load_saes(cfg.model.sae, list(method.layers), device)
    vectors = {layer: layer_vectors(collected, saes[layer], layer, method.K, method.weighting, cfg.model.sae.code,
                                    cfg.seed, n_jobs=method.mi_jobs) for layer in method.layers}
    run.write_table("latents", [{"layer": layer, "k": v.k, "n": saes[layer].n, "n_context": len(v.context_latents),
                                 "n_memory": len(v.memory_latents), "context_latents": " ".join(map(str, v.context_latents)),
                                 "memory_latents": " ".join(map(str, v.memory_latents))} for layer, v in vectors.items()])

    def alpha_for(direction: str) -> float:
        return method.alpha_memory if direction == "memory" and method.alpha_memory is not None else method.alpha

    def spare_edits(mode: str):
        return lambda direction: {layer: SpareEdit(saes[layer], v.z_context, v.z_memory, direction, alpha_for(direction),
                                                   method.alpha_placement, mode, cfg.model.sae.code)
                                  for layer, v in vectors.items()}

    means = {layer: group_means(collected, layer) for layer in layers}
    neutral = neutral_rows(len(prompts), list(method.collect.styles)) if sea_cfgs else None
    seas = {(name, layer, d): fit_sea_direction(collected.acts[layer], collected.label, neutral, d, feature=c.feature,
                                                keep_ratio=c.keep_ratio, remove_ratio=c.remove_ratio,
                                                keep_k=c.keep_k, remove_k=c.remove_k, length_scale=c.length_scale,
                                                device=device)
            for name, c in sea_cfgs.items() for layer in c.layers for d in ("context", "memory")}
    rows_out = []
    for seed in data.demo_seeds:
        demos = {i.idx: sample_demos(dev, data.k_shot, seed, i.group) for i in test}
        base_prompts = [prompt(i, demos[i.idx], "doo") for i in test]
        base = generate(model, tokenizer, base_prompts, **gen)
        runs = {f"spare_{mode}": spare_edits(mode) for mode in method.modes}
        for layer in method.baselines.actadd.layers:
            for alpha in method.baselines.actadd.alphas:
                runs[f"actadd_l{layer}_a{alpha}"] = (lambda l, a: lambda d: {l: ActAddEdit(*means[l], d, a)})(layer, alpha)
        for layer in method.baselines.taskvec.layers:
            runs[f"taskvec_l{layer}"] = (lambda l: lambda d: {l: TaskVecEdit(*means[l], d)})(layer)
        for name, layer in dict.fromkeys((n, l) for n, l, _ in seas):
            runs[f"{name}_l{layer}"] = (lambda n, l: lambda d: {l: seas[(n, l, d)]})(name, layer)
        outputs = {name: {d: generate(model, tokenizer, base_prompts, edits=fn(d), **gen) for d in ("context", "memory")}
                   for name, fn in runs.items()}
        if method.baselines.icl:
            outputs["icl"] = {"context": generate(model, tokenizer, [prompt(i, demos[i.idx], "dss") for i in test], **gen),
                              "memory": generate(model, tokenizer, [prompt(i, demos[i.idx], "dso") for i in test], **gen)}
        if method.baselines.cad.enabled:
            closed = [demo_text(demos[i.idx], "closed") + block(None, i.question) for i in test]
            outputs["cad"] = {d: cad_generate(model, tokenizer, base_prompts, closed, method.baselines.cad[f"alpha_{d}"],
                                              data.max_new_tokens, method.batch_size) for d in ("context", "memory")}
        if method.baselines.dola.enabled:
            dola = method.baselines.dola
            for bucket in dola.buckets:
                label = bucket if isinstance(bucket, str) else "l" + "-".join(map(str, bucket))
                outputs[f"dola_{label}"] = {d: dola_generate(model, tokenizer, base_prompts, dola[f"alpha_{d}"], bucket,
                                                             dola.plausibility, data.max_new_tokens, method.batch_size)
                                            for d in ("context", "memory")}
        for rule in dict.fromkeys([data.em_c, "exact"]):
            base_c, base_m = score(cfg, base, test, rule)
            rows_out.append({"method": "no_control", "demo_seed": seed, "em_rule": rule,
                             **steering_metrics(base_c, base_m, base_c, base_m, base_c, base_m)})
            for name, preds in outputs.items():
                to_c_c, to_c_m = score(cfg, preds["context"], test, rule)
                to_m_c, to_m_m = score(cfg, preds["memory"], test, rule)
                rows_out.append({"method": name, "demo_seed": seed, "em_rule": rule,
                                 **steering_metrics(base_c, base_m, to_c_c, to_c_m, to_m_c, to_m_m)})
    run.write_table("em", rows_out)
    frame = pd.DataFrame(rows_out)
    main = frame[frame.em_rule == data.em_c]
    summary = main.groupby("method")[list(EM_KEYS)].agg(["mean", "std"])
    atomic_write_text(run.path / "table5_1.md", table5_1_markdown(summary, cfg))
    metrics: dict[str, object] = {"n_memorised": len(known), "n_dev": len(dev), "n_test": len(test),
                                  "n_collected_context": int((collected.label == 1).sum()),
                                  "n_collected_memory": int((collected.label == 0).sum())}
    for name in summary.index:
        for key in EM_KEYS:
            metrics[f"{name}/{key}"] = float(summary.loc[name, (key, "mean")])
    for layer, v in vectors.items():
        metrics[f"latents/layer{layer}/k"] = v.k
        metrics[f"latents/layer{layer}/share"] = v.k / saes[layer].n
    return metrics


def table5_1_markdown(summary: pd.DataFrame, cfg: DictConfig) -> str:
    lines = [f"EM (%) on {cfg.data.name}, {cfg.model.name}: mean ± std over demonstration seeds "
             f"({len(cfg.data.demo_seeds)}); EM_M when steering to memory, EM_C when steering to context.", "",
             "| method | EM_M | EM_C | EM_C→M | EM_M→C | EM_M→M | EM_C→C |", "|---|---|---|---|---|---|---|"]
    for name in summary.index:
        cells = [f"{summary.loc[name, (k, 'mean')]:.2f} ± {np.nan_to_num(summary.loc[name, (k, 'std')]):.2f}"
                 for k in ("em_m", "em_c", "em_c_to_m", "em_m_to_c", "em_m_to_m", "em_c_to_c")]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"

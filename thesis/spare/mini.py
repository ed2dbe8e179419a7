"""Runners of the miniatures (spec C.3): `run_spare_mini` (claims 1-7 and 13-15 on a Llama trained here
on the synthetic world) and `run_resid_probe_mini` (claims 9-12). Both start from the same cached
LM (`thesis.spare.synth_lm.trained_lm`), so running both trains it once per seed.

spare_mini: dev facts give the collection prompts (every source, fresh conflicting values) and a
held-out dev prompt set for choosing K and alpha (by EM_{C->M} + EM_{M->C}), ActAdd's layer and
coefficient and TaskVec's layer; test facts are never seen before the final evaluation. SAEs (TopK)
are trained per layer on all-position activations of training-distribution sequences.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig

from thesis.core.claims import claim, claim_metrics
from thesis.core.hardware import device_of
from thesis.core.rundir import RunDir
from thesis.spare.em import exact_match, steering_metrics
from thesis.spare.generation import cad_generate, generate
from thesis.spare.hooks import Capture
from thesis.spare.mini_data import PromptSet, prompt_set, split_facts
from thesis.spare.pipeline import Collected, collect, group_means, layer_vectors
from thesis.spare.probe import ProbeConfig
from thesis.spare.resid import (conflict_probe, group_statistics, plot_probe_curves, plot_statistics,
                                selection_probe)
from thesis.spare.sae_train import train_sae
from thesis.spare.selection import mutual_information, random_latent_vectors
from thesis.spare.steering import ActAddEdit, SpareEdit, TaskVecEdit
from thesis.spare.synth_lm import trained_lm
from thesis.spare.trajectory import steering_trajectory, trajectory_effects


def matches(predictions: list[str], answers: list[tuple[str]]) -> np.ndarray:
    return np.array([exact_match(p, a) for p, a in zip(predictions, answers)])


class Evaluator:
    """Predictions of one prompt set without control and under edits, as the six EM metrics."""

    def __init__(self, model, tokenizer, prompts: PromptSet, batch_size: int) -> None:
        self.model, self.tokenizer, self.prompts, self.batch_size = model, tokenizer, prompts, batch_size
        base = self.predict(prompts.conflict)
        self.base = (matches(base, prompts.context_answers), matches(base, prompts.memory_answers))

    def predict(self, texts: list[str], edits=None) -> list[str]:
        return generate(self.model, self.tokenizer, texts, 1, self.batch_size, edits=edits)

    def score(self, to_context: list[str], to_memory: list[str]) -> dict[str, float]:
        p = self.prompts
        return steering_metrics(*self.base, matches(to_context, p.context_answers), matches(to_context, p.memory_answers),
                                matches(to_memory, p.context_answers), matches(to_memory, p.memory_answers))

    def edits(self, edits_for) -> dict[str, float]:
        return self.score(self.predict(self.prompts.conflict, edits_for("context")),
                          self.predict(self.prompts.conflict, edits_for("memory")))

    def no_control(self) -> dict[str, float]:
        base = self.predict(self.prompts.conflict)
        return self.score(base, base)


def selection_score(metrics: dict[str, float]) -> float:
    return sum(0.0 if math.isnan(metrics[k]) else metrics[k] for k in ("em_c_to_m", "em_m_to_c"))


def sae_activations(model, world, n_sequences: int, layers: list[int], seed: int, device) -> dict[int, torch.Tensor]:
    """All-position block outputs of training-distribution sequences, per layer."""
    ids, _ = world.training_batch(n_sequences, np.random.default_rng(seed + 200), (0.4, 0.25, 0.35))
    with Capture(model, layers, ("hidden",), last=False) as capture, torch.no_grad():
        for chunk in ids.split(256):
            model(input_ids=chunk.to(device))
    return {layer: value.reshape(-1, value.shape[-1]) for (_, layer), value in capture.result().items()}


def binomial_z(a: float, b: float, n: int) -> float:
    """(a - b) / pooled std of two percentages measured on n instances each."""
    pa, pb = a / 100, b / 100
    se = math.sqrt(max(pa * (1 - pa) + pb * (1 - pb), 1e-12) / n)
    return (pa - pb) / se


def run_spare_mini(cfg: DictConfig, run: RunDir) -> dict[str, object]:
    m = cfg.method
    device = device_of(cfg.hardware)
    model, tokenizer, world, info = trained_lm(cfg, device)
    rng = np.random.default_rng(cfg.seed + 100)
    dev_facts, test_facts = split_facts(world, m.n_dev_facts, rng)
    collection, dev_set, test_set = (prompt_set(world, dev_facts, rng, all_sources=True), prompt_set(world, dev_facts, rng),
                                     prompt_set(world, test_facts, rng))
    n_layers = model.config.num_hidden_layers
    layers = list(range(n_layers))
    collected = collect(model, tokenizer, collection.conflict, collection.context_answers, collection.memory_answers,
                        layers, "em", m.weighting, 1, m.batch_size)
    closed = generate(model, tokenizer, test_set.closed, 1, m.batch_size)
    metrics: dict[str, object] = {**{f"lm/{k}": v for k, v in info.items()},
                                  "lm/closed_book_em": 100 * float(matches(closed, test_set.memory_answers).mean()),
                                  "collected/context": int((collected.label == 1).sum()),
                                  "collected/memory": int((collected.label == 0).sum())}
    acts = sae_activations(model, world, m.sae.n_sequences, layers, cfg.seed, device)
    d = model.config.hidden_size
    saes, mi, latent_rows = {}, {}, []
    labelled = collected.label >= 0
    for layer in layers:
        saes[layer], losses = train_sae(acts[layer], n=m.sae.expansion * d, k=m.sae.k, steps=m.sae.steps,
                                        batch_size=m.sae.batch_size, lr_scale=m.sae.lr_scale, seed=cfg.seed)
        Z = saes[layer].code(collected.acts[layer], m.code).detach().numpy()
        mi[layer] = mutual_information(Z[labelled], collected.label[labelled], seed=cfg.seed)
        metrics[f"sae/layer{layer}/fvu"] = saes[layer].fvu(acts[layer][:4096])
        metrics[f"sae/layer{layer}/loss_first"], metrics[f"sae/layer{layer}/loss_last"] = losses[0], float(np.mean(losses[-20:]))
    vectors = lambda layer, K: layer_vectors(collected, saes[layer], layer, K, m.weighting, m.code, cfg.seed,  # noqa: E731
                                             mi=mi[layer])

    def spare(edit_layers, K, alpha, mode="full", flip=False, placement=None, random_control=False, given=None):
        built = {}
        for layer in edit_layers:
            v = given[layer] if given else vectors(layer, K)
            if random_control:
                Z = saes[layer].code(collected.acts[layer], m.code).detach().numpy()
                v = random_latent_vectors(Z[collected.label == 1], Z[collected.label == 0], len(v.context_latents),
                                          len(v.memory_latents), cfg.seed)
            built[layer] = (v.z_memory, v.z_context) if flip else (v.z_context, v.z_memory)
        return lambda direction: {layer: SpareEdit(saes[layer], zc, zm, direction, alpha, placement or m.alpha_placement,
                                                   mode, m.code) for layer, (zc, zm) in built.items()}

    dev_eval = Evaluator(model, tokenizer, dev_set, m.batch_size)
    test_eval = Evaluator(model, tokenizer, test_set, m.batch_size)
    rows = []
    for K in m.grid.K:
        for alpha in m.grid.alpha:
            result = dev_eval.edits(spare(m.layers, K, alpha))
            rows.append({"split": "dev", "method": "spare", "K": K, "alpha": alpha, **result})
    best = max((r for r in rows if r["method"] == "spare"), key=selection_score)
    K, alpha = best["K"], best["alpha"]
    means = {layer: group_means(collected, layer) for layer in layers}
    actadd = max(((layer, a, dev_eval.edits(lambda dr, l=layer, a=a: {l: ActAddEdit(*means[l], dr, a)}))
                  for layer in layers for a in m.grid.actadd_alpha), key=lambda t: selection_score(t[2]))
    taskvec = max(((layer, dev_eval.edits(lambda dr, l=layer: {l: TaskVecEdit(*means[l], dr)})) for layer in layers),
                  key=lambda t: selection_score(t[1]))
    test = {"no_control": test_eval.no_control(),
            "spare": test_eval.edits(spare(m.layers, K, alpha)),
            "spare_input_independent": test_eval.edits(spare(m.layers, K, alpha, "input_independent")),
            "spare_remove_only": test_eval.edits(spare(m.layers, K, alpha, "remove_only")),
            "spare_add_only": test_eval.edits(spare(m.layers, K, alpha, "add_only")),
            "control_flipped": test_eval.edits(spare(m.layers, K, alpha, flip=True)),
            "control_random_latents": test_eval.edits(spare(m.layers, K, alpha, random_control=True)),
            "spare_alpha_outside": test_eval.edits(spare(m.layers, K, alpha, placement="outside")),
            "actadd": test_eval.edits(lambda dr: {actadd[0]: ActAddEdit(*means[actadd[0]], dr, actadd[1])}),
            "taskvec": test_eval.edits(lambda dr: {taskvec[0]: TaskVecEdit(*means[taskvec[0]], dr)})}
    cad = {dr: cad_generate(model, tokenizer, test_set.conflict, test_set.closed, m.cad[f"alpha_{dr}"], 1, m.batch_size)
           for dr in ("context", "memory")}
    test["cad"] = test_eval.score(cad["context"], cad["memory"])
    for layer in layers:
        test[f"spare_single_layer{layer}"] = test_eval.edits(spare([layer], K, alpha))
    rows += [{"split": "test", "method": name, "K": K, "alpha": alpha, **result} for name, result in test.items()]
    run.write_table("em", rows)
    sweep = n_sweep(collected, saes, mi, m, K, cfg.seed,
                    lambda given: test_eval.edits(spare(m.layers, K, alpha, given=given)))
    run.write_table("n_sweep", sweep)
    edited = m.trajectory_layer
    trajectory = steering_trajectory(model, tokenizer, dev_set.conflict, dev_set.consistent, test_set.conflict,
                                     spare([edited], K, alpha), layers, m.batch_size, ProbeConfig(), cfg.seed)
    run.write_table("trajectory", trajectory)
    for layer in m.layers:
        v = vectors(layer, K)
        latent_rows.append({"layer": layer, "K": K, "k": v.k, "n": saes[layer].n, "share": v.k / saes[layer].n,
                            "n_context": len(v.context_latents), "n_memory": len(v.memory_latents)})
    run.write_table("latents", latent_rows)
    run.write_table("mi_curve", [{"layer": layer, "k": k + 1, "mass": float(c)} for layer in layers
                                 for k, c in enumerate(np.cumsum(np.sort(mi[layer])[::-1]) / max(mi[layer].sum(), 1e-12))
                                 if k < 200])
    for name, result in test.items():
        for key in ("em_c", "em_m", "em_c_to_m", "em_m_to_c", "em_m_to_m", "em_c_to_c"):
            metrics[f"test/{name}/{key}"] = result[key]
    metrics.update({"chosen/K": K, "chosen/alpha": alpha, "chosen/actadd_layer": actadd[0], "chosen/actadd_alpha": actadd[1],
                    "chosen/taskvec_layer": taskvec[0]})
    claims = spare_claims(test, latent_rows, len(test_set.conflict), m.claims, sweep,
                          trajectory_effects(trajectory, edited))
    run.write_table("claims", claims)
    plot_spare_mini(test, layers, run)
    metrics.update(claim_metrics(claims))
    return metrics


def n_sweep(collected: Collected, saes: dict, mi: dict, m: DictConfig, K: float, seed: int, evaluate) -> list[dict]:
    """Fig. 5.10 analogue: N collected examples (half per behaviour) for the MI ranking (means from
    all) and for the mean vectors (MI from all); SpARE re-evaluated on the test facts for each."""
    rng = np.random.default_rng(seed + 400)
    context, memory = np.flatnonzero(collected.label == 1), np.flatnonzero(collected.label == 0)
    rows = []
    for n in m.n_sweep:
        half = n // 2
        pick = np.r_[rng.choice(context, min(half, len(context)), replace=False),
                     rng.choice(memory, min(half, len(memory)), replace=False)]
        subset = Collected({l: a[torch.as_tensor(pick)] for l, a in collected.acts.items()},
                           [collected.predictions[i] for i in pick], collected.label[pick],
                           collected.loss_context[pick], collected.loss_memory[pick])
        for target in ("mi", "means"):
            given = {}
            for layer in m.layers:
                if target == "mi":
                    Z = saes[layer].code(subset.acts[layer], m.code).detach().numpy()
                    sub_mi = mutual_information(Z, subset.label, seed=seed)
                    given[layer] = layer_vectors(collected, saes[layer], layer, K, m.weighting, m.code, seed, mi=sub_mi)
                else:
                    given[layer] = layer_vectors(subset, saes[layer], layer, K, m.weighting, m.code, seed, mi=mi[layer])
            result = evaluate(given)
            rows.append({"n": int(n), "n_used": int(len(pick)), "varied": target, "em_c": result["em_c"], "em_m": result["em_m"],
                         "em_c_to_m": result["em_c_to_m"], "em_m_to_c": result["em_m_to_c"]})
    return rows


def spare_claims(test: dict[str, dict], latent_rows: list[dict], n: int, limits: DictConfig,
                 sweep: list[dict], trajectory: tuple[float, float]) -> list[dict]:
    none, sp, act = test["no_control"], test["spare"], test["actadd"]
    total = lambda r: r["em_m"] + r["em_c"]  # noqa: E731
    methods = ["spare", "actadd", "taskvec", "cad"]
    harder = [test[x]["em_c_to_m"] < test[x]["em_m_to_c"] for x in methods
              if not (math.isnan(test[x]["em_c_to_m"]) or math.isnan(test[x]["em_m_to_c"]))]
    ablations = max(total(test[f"spare_{a}"]) for a in ("input_independent", "remove_only", "add_only"))
    return [
        claim("C1", "SpARE->M: EM_M gain over no control (points)", sp["em_m"] - none["em_m"], ">=", limits.c1_min_gain),
        claim("C1z", "SpARE->M: EM_M gain over no control / pooled std", binomial_z(sp["em_m"], none["em_m"], n), ">=",
              limits.min_z),
        claim("C2z", "SpARE->C: EM_C gain over no control / pooled std", binomial_z(sp["em_c"], none["em_c"], n), ">=",
              limits.min_z),
        claim("C3", "SpARE minus ActAdd, worse of the two directions (points)",
              min(sp["em_m"] - act["em_m"], sp["em_c"] - act["em_c"]), ">=", limits.c3_min_margin),
        claim("C4", "share of methods with EM_C->M < EM_M->C", float(np.mean(harder)) if harder else float("nan"), ">=",
              limits.c4_min_share),
        claim("C5", "SpARE minus ActAdd on EM_M->M and EM_C->C, the worse (points)",
              min(sp["em_m_to_m"] - act["em_m_to_m"], sp["em_c_to_c"] - act["em_c_to_c"]), ">=", limits.c5_min_margin),
        claim("C6", "full SpARE EM_M + EM_C minus the best ablation", total(sp) - ablations, ">=", limits.c6_min_margin),
        claim("C7", "largest share k/n of selected latents over edited layers",
              max(r["share"] for r in latent_rows), "<=", limits.c7_max_share),
        claim("C15c", "SpARE->C EM_C minus flipped control / pooled std",
              binomial_z(sp["em_c"], test["control_flipped"]["em_c"], n), ">=", limits.min_z),
        claim("C15m", "SpARE->M EM_M minus flipped control / pooled std",
              binomial_z(sp["em_m"], test["control_flipped"]["em_m"], n), ">=", limits.min_z),
        claim("C15r", "SpARE->C EM_C minus random-latent control / pooled std",
              binomial_z(sp["em_c"], test["control_random_latents"]["em_c"], n), ">=", limits.min_z),
        claim("C13a", "conflict-probe score drop after the edited layer when steering to memory",
              trajectory[0], ">=", limits.c13_min_effect),
        claim("C13b", "kurtosis rise after the edited layer when steering to context", trajectory[1], ">=",
              limits.c13_min_effect),
        claim("C14", "EM_C + EM_M with all collected examples minus with N = 128 for MI (plateau)",
              plateau_gap(sweep, "mi", limits.c14_n), "<=", limits.c14_max_gap),
        claim("C14b", "EM_C + EM_M with all collected examples minus with N = 128 for the means (plateau)",
              plateau_gap(sweep, "means", limits.c14_n), "<=", limits.c14_max_gap),
    ]


def plateau_gap(sweep: list[dict], varied: str, n: int) -> float:
    rows = [r for r in sweep if r["varied"] == varied]
    at_n = [r for r in rows if r["n"] == n]
    if not rows or not at_n:
        return float("nan")
    largest = max(rows, key=lambda r: r["n"])
    return (largest["em_c"] + largest["em_m"]) - (at_n[0]["em_c"] + at_n[0]["em_m"])


def plot_spare_mini(test: dict[str, dict], layers: list[int], run: RunDir) -> None:
    """Fig. 5.4a/c and 5.5 analogues from this run's test metrics."""
    from thesis.core.plotting import new_figure, plt

    fig, axes = new_figure(width=13, height=3.8, ncols=3)
    main = ["no_control", "spare", "actadd", "taskvec", "cad", "control_flipped", "control_random_latents"]
    for name in main:
        axes[0].scatter(test[name]["em_c_to_m"], test[name]["em_m_to_c"], label=name)
    axes[0].set(xlabel="EM C→M", ylabel="EM M→C", title="(a) changing behaviour")
    for name in ["no_control", "spare", "spare_input_independent", "spare_remove_only", "spare_add_only"]:
        axes[1].scatter(test[name]["em_m"], test[name]["em_c"], label=name)
    axes[1].set(xlabel="EM_M (→M)", ylabel="EM_C (→C)", title="(c) ablations")
    none = test["no_control"]
    axes[2].plot(layers, [test[f"spare_single_layer{l}"]["em_c"] - none["em_c"] for l in layers], "o-", label="→C gain")
    axes[2].plot(layers, [test[f"spare_single_layer{l}"]["em_m"] - none["em_m"] for l in layers], "o-", label="→M gain")
    axes[2].set(xlabel="edited layer", ylabel="EM gain (points)", title="single-layer SpARE")
    for ax in axes:
        ax.legend(fontsize=6)
    run.figures_dir.mkdir(parents=True, exist_ok=True)
    fig.savefig(run.figures_dir / "spare_mini.png", dpi=130)
    plt.close(fig)


def capture_all(model, tokenizer, texts: list[str], layers: list[int], batch_size: int):
    """Greedy first answers and last-position hidden / mlp / attn activations of every layer."""
    capture = Capture(model, layers, ("hidden", "mlp", "attn"))
    predictions = generate(model, tokenizer, texts, 1, batch_size, capture=capture)
    return predictions, {key: value.numpy() for key, value in capture.result().items()}


def run_resid_probe_mini(cfg: DictConfig, run: RunDir) -> dict[str, object]:
    m = cfg.method
    device = device_of(cfg.hardware)
    model, tokenizer, world, info = trained_lm(cfg, device)
    rng = np.random.default_rng(cfg.seed + 300)
    facts = world.facts[rng.permutation(len(world.facts))][:m.n_facts]
    prompts = prompt_set(world, facts, rng)
    layers = list(range(model.config.num_hidden_layers))
    predictions, conflict = capture_all(model, tokenizer, prompts.conflict, layers, m.batch_size)
    _, no_conflict = capture_all(model, tokenizer, prompts.consistent, layers, m.batch_size)
    is_c, is_m = matches(predictions, prompts.context_answers), matches(predictions, prompts.memory_answers)
    label = np.where(is_c, 1, np.where(is_m, 0, -1))
    config = ProbeConfig(l1=m.probe.l1, epochs=m.probe.epochs, penalise_bias=m.probe.penalise_bias)
    seeds = list(range(m.probe.seeds))
    rows = conflict_probe(conflict, no_conflict, prompts.groups, m.n_test_groups, config, seeds)
    rows += selection_probe(conflict, label, prompts.groups, m.n_test_groups, config, seeds)
    stats = group_statistics(conflict, label)
    run.write_table("probe", rows)
    run.write_table("stats", stats)
    plot_probe_curves(rows, run.figures_dir / "probe", "resid_probe_mini")
    plot_statistics(stats, run.figures_dir / "stats_hidden", "resid_probe_mini: D_C vs D_M")
    frame = pd.DataFrame(rows)
    curve = frame.groupby(["task", "kind", "layer"]).auroc.mean()
    metrics: dict[str, object] = {"lm/train_seconds": info.get("train_seconds"),
                                  "conflict/context_rate": 100 * float(is_c.mean()),
                                  "conflict/memory_rate": 100 * float(is_m.mean())}
    for (task, kind, layer), value in curve.items():
        metrics[f"{task}/{kind}/layer{layer}/auroc"] = float(value)
    claims = resid_claims(curve, pd.DataFrame(stats), layers, m.claims)
    run.write_table("claims", claims)
    metrics.update(claim_metrics(claims))
    return metrics


def resid_claims(curve: pd.Series, stats: pd.DataFrame, layers: list[int], limits: DictConfig) -> list[dict]:
    hidden = curve.loc[("conflict", "hidden")]
    peak = int(hidden.idxmax())
    after = [l for l in layers if l > peak]
    late_margin = min((hidden[l] - max(curve.loc[("conflict", k)][l] for k in ("mlp", "attn")) for l in after),
                      default=0.0)
    selection = curve.loc[("selection", "hidden")] if ("selection", "hidden") in curve.index else hidden * np.nan
    kurt = stats[(stats.kind == "hidden") & (stats.statistic == "kurtosis")].set_index("layer")
    late = layers[len(layers) // 2:]
    norms = stats[(stats.kind == "hidden") & stats.statistic.isin(["l1", "l2"])]
    return [
        claim("C9a", "peak conflict-probe AUROC (hidden)", float(hidden.max()), ">=", limits.c9_min_peak),
        claim("C9b", "conflict-probe AUROC (hidden) at layer 0", float(hidden.iloc[0]), "<=", limits.c9_max_first),
        claim("C10", "hidden minus best of mlp/attn AUROC after the peak, worst layer", float(late_margin), ">=",
              limits.c10_min_margin),
        claim("C11", "selection-probe peak layer minus conflict-probe peak layer",
              float(selection.idxmax() - peak) if selection.notna().any() else float("nan"), ">=", 0.0),
        claim("C12", "smallest Welch t of kurtosis (context minus memory) over the late layers",
              float(kurt.loc[late, "t"].min()), ">=", limits.c12_min_t),
        claim("C12b", "kurtosis effect size minus the largest absolute L1 or L2 effect size, late layers",
              float(kurt.loc[late, "effect_size"].mean() - norms[norms.layer.isin(late)].effect_size.abs().max()), ">=", 0.0),
    ]

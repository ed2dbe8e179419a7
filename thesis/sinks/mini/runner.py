"""Runner `thesis.sinks.mini.runner.run_sinks_mini`: the trained miniature of Section 5.4 (spec B.7).

1. Train `arm`, then `llada`, then `dream` (from the `arm` checkpoint) on `synth_reasoning`; each is
   saved with `save_pretrained` under `<run>/checkpoints/<mode>/` and reloaded with `from_pretrained`.
2. Decode the held-out prompts of both tasks with each mode's own decoder (LLaDA blocks, Dream's
   shift anywhere, greedy autoregressive) under `SinkCapture` for every top-K of `method.mask_topk`,
   and the random-init control (same architecture, untrained) with the same three decoders.
3. Write the tables `training`, `loss_curves`, `accuracy` (exact match, binomial stderr),
   `sink_summary`, `head_sinks`, `eps_sweep`, `claims` (thesis/sinks/mini/claims.py), the figures
   `sinks_mini_main_sink_heatmap` (Fig. 5.54), `sinks_mini_main_sink_position` (Fig. 5.56) and
   `sinks_mini_eps_sweep` (Fig. 5.59), and flat metrics.
"""

from __future__ import annotations

from omegaconf import DictConfig
from tqdm.auto import tqdm

from thesis.core.claims import claim_metrics
from thesis.core.errors import ConfigError
from thesis.core.hardware import device_of
from thesis.core.rundir import RunDir
from thesis.sinks.mini import figures
from thesis.sinks.mini.claims import binomial_stderr, mini_claims
from thesis.sinks.mini.corpus import SynthReasoning
from thesis.sinks.mini.measure import SinkStats, evaluate
from thesis.sinks.mini.model import MODES, build_model
from thesis.sinks.mini.train import load_checkpoint, train_mode, training_pool
from thesis.sinks.runner import DECODER_KINDS

TRAIN_ORDER = ("arm", "llada", "dream")


def check_method(method: DictConfig) -> None:
    if list(method.mask_topk)[:2] != [0, 1]:
        raise ConfigError(f"method.mask_topk={list(method.mask_topk)} must start with 0, 1 (the claims compare them)")
    if method.eps not in method.eps_grid:
        raise ConfigError(f"method.eps={method.eps} is not in method.eps_grid: add it")
    if set(method.decoders) != set(MODES):
        raise ConfigError(f"method.decoders must name exactly {', '.join(MODES)}, got {', '.join(method.decoders)}")
    for name, decoder in method.decoders.items():
        if decoder.kind not in DECODER_KINDS:
            raise ConfigError(f"method.decoders.{name}.kind={decoder.kind!r} is unknown: use one of "
                              f"{', '.join(DECODER_KINDS)}")


def run_sinks_mini(cfg: DictConfig, run: RunDir) -> dict[str, object]:
    data, method, device = cfg.data, cfg.method, device_of(cfg.hardware)
    check_method(method)
    corpus = SynthReasoning(data.prompt_length, data.gen_length, data.holdout_mod)
    eval_set = corpus.eval_set(data.n_eval_per_task, data.seed)
    pool = training_pool(corpus, data.train_pool, data.seed + 1)
    infos = [train_mode(mode, pool, data.prompt_length, cfg.model, cfg.seed, run.checkpoint_dir, device)
             for mode in TRAIN_ORDER]
    models = {mode: load_checkpoint(run.checkpoint_dir / mode, device).eval() for mode in MODES}
    control = build_model(cfg.model.shape, corpus.seq_length, cfg.seed + 100).to(device).eval()

    summary, accuracy, head_rows, sweep_rows, traces = {}, {}, [], [], {}
    shape = cfg.model.shape
    jobs = [(mode, mode, models[mode], list(method.mask_topk)) for mode in MODES]
    jobs += [(f"control_{mode}", mode, control, [0]) for mode in MODES]
    runs = [(name, mode, model, topk) for name, mode, model, topks in jobs for topk in topks]
    for name, mode, model, topk in tqdm(runs, desc="decode held-out prompts", leave=False):
        stats = SinkStats(shape.layers, shape.heads, method.eps, list(method.eps_grid)) if topk == 0 else None
        for task, hits_n in evaluate(model, mode, method.decoders[mode], eval_set, data.prompt_length, method,
                                     topk, stats, device).items():
            accuracy[(name, topk, task)] = hits_n
        if stats is not None:
            summary[name] = stats.summary()
            head_rows += stats.head_rows(name)
            sweep_rows += stats.sweep_rows(name)
            best = max(stats.head_rows(name), key=lambda r: (r["sink_prevalence"], r["main_score"]))
            traces[name] = ((best["layer"], best["head"]), stats.trace[(best["layer"], best["head"])])

    accuracy_rows = [{"model": name, "topk": topk, "task": task, "hits": hits, "n": n, "exact_match": hits / n,
                      "stderr": binomial_stderr(hits, n)} for (name, topk, task), (hits, n) in accuracy.items()]
    claims = mini_claims(summary, accuracy, method.claims)
    run.write_table("training", [{k: v for k, v in info.items() if k != "loss_curve"} for info in infos])
    run.write_table("loss_curves", [{"mode": info["mode"], "point": i, "loss": loss}
                                    for info in infos for i, loss in enumerate(info["loss_curve"])])
    run.write_table("accuracy", accuracy_rows)
    run.write_table("sink_summary", [{"model": name, **values} for name, values in summary.items()])
    run.write_table("head_sinks", head_rows)
    run.write_table("eps_sweep", sweep_rows)
    run.write_table("claims", claims)
    shown = [*MODES, "control_llada"]
    figures.heatmaps([row for row in head_rows if row["model"] in shown], run.path)
    figures.trajectories({name: traces[name] for name in MODES}, run.path)
    figures.eps_sweep(sweep_rows, method.eps, run.path)

    metrics: dict[str, object] = {f"{info['mode']}/{key}": info[key] for info in infos
                                  for key in ("final_loss", "seconds_per_step")}
    metrics.update({f"{name}/{key}": value for name, values in summary.items() for key, value in values.items()
                    if "/" not in key or key.startswith(("enrichment", "sink_share"))})
    metrics.update({f"{row['model']}/top{row['topk']}/{row['task']}/exact_match": row["exact_match"]
                    for row in accuracy_rows})
    metrics.update(claim_metrics(claims))
    return metrics

"""Runner of `kv_mini` / `kv_mini_gpu` / `kv_mini_gpu_r2` (spec F.b): train the kvmini Llama on bytes,
then M1-M5 and the pre-registered claims.

Order: corpus and training stream (answer bytes weighted `train.answer_weight`, mini-RULER kinds added
by `train.ruler_mixture`) -> training (resumable, `train.py`) -> the checkpoint read back with
`from_pretrained` -> Q-Filters calibrated on training text -> M1 correlation (eager attention) -> M2
streaming perplexity -> M3 passkey / NIAH accuracy -> M5 mini-RULER accuracy (when enabled) -> M4
reconstruction (when enabled; the future-attention oracle as method `oracle` when
`reconstruction.oracle`) -> claims (M5 enters none).
Tables (`<run>/tables/*.csv`): train_loss, heads, filters, streaming, retrieval, ruler (M5),
reconstruction, claims; figures in `<run>/figures/`; metrics: training, per-stage seconds, headline
numbers and `claims/<id>/{value,passed}`.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import pandas as pd
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from thesis.core.claims import claim_metrics
from thesis.core.errors import ConfigError
from thesis.core.evaluate import progress
from thesis.core.hardware import device_of
from thesis.core.rundir import RunDir
from thesis.kvcache.mini import figures
from thesis.kvcache.mini.bootstrap import bootstrap_ci
from thesis.kvcache.mini.claims import evaluate_claims
from thesis.kvcache.mini.corpus import Corpus, load_corpus
from thesis.kvcache.mini.correlation import correlation_analysis
from thesis.kvcache.mini.documents import TrainingStream, equal_length_words, evaluation_documents
from thesis.kvcache.mini.model import load_model, parameter_count
from thesis.kvcache.mini.reconstruction import reconstruction_error
from thesis.kvcache.mini.retrieval import accuracy_per_prompt
from thesis.kvcache.mini.ruler import generator_of, ruler_documents
from thesis.kvcache.mini.streaming import streaming_press, token_losses
from thesis.kvcache.mini.tokenizer import BOS
from thesis.kvcache.mini.train import train_model
from thesis.kvcache.oracle import FutureAttentionPress, continuation_run
from thesis.kvcache.press import Press
from thesis.kvcache.qfilters import QFiltersPress, calibrate_q_filters


def heldout_chunks(text: np.ndarray, n: int, length: int, seed: int) -> torch.Tensor:
    """n windows of length - 1 held-out bytes, each after a BOS: (n, length)."""
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, len(text) - length, size=n)
    rows = [[BOS, *text[s:s + length - 1].tolist()] for s in starts]
    return torch.tensor(rows)


def make_press(spec: Any, ratio: float, filters: torch.Tensor) -> Press:
    press = instantiate(spec, compression_ratio=ratio, _convert_="all")
    if isinstance(press, QFiltersPress):
        press.filters = filters
    return press


class Stages:
    """Wall-clock seconds per stage, reported as metrics."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def __call__(self, name: str, began: float) -> None:
        self.seconds[f"time/{name}_s"] = time.time() - began


def run_correlation(model_dir, device, eval_cfg, corpus: Corpus, filters, seed: int) -> dict[str, pd.DataFrame]:
    m1 = eval_cfg.correlation
    eager = load_model(model_dir, device, "eager")
    chunks = heldout_chunks(corpus.heldout, m1.chunks, eval_cfg.chunk_length, seed)
    found = correlation_analysis(eager, chunks, filters, m1.n_future, min(m1.stats_tokens, eval_cfg.chunk_length - 1),
                                 m1.batch_size, seed)
    return {"heads": pd.DataFrame(found["heads"]), "filters": pd.DataFrame(found["filters"])}


def run_streaming(model, eval_cfg, presses, corpus: Corpus, filters, seed: int):
    m2 = eval_cfg.streaming
    length = eval_cfg.chunk_length
    chunks = heldout_chunks(corpus.heldout, m2.chunks, length, seed + 1)
    full_nll, full_hit = token_losses(model, chunks, None)
    settings = [("budget", m, r, 0, None, None) for m in m2.methods for r in m2.ratios]
    settings += [("budget", m, r, m2.window, None, None) for m in m2.window_methods for r in m2.window_ratios]
    settings += [("knorm", m, k, 0, s, k) for m in m2.knorm_protocol.methods for k in m2.knorm_protocol.keep_ratios
                 for s in [m2.knorm_protocol.prune_after_fraction]]
    rows, per_chunk = [], {}
    for protocol, method, ratio, window, prune_fraction, keep in progress(settings, desc="M2 streaming"):
        if protocol == "budget":
            budget = max(1, int(length * (1 - ratio)))
            press = streaming_press(make_press(presses[method], 0.0, filters), "budget", budget=budget,
                                    window=window, interval=m2.interval, buffer=m2.buffer)
        else:
            prune_after = int(length * prune_fraction)
            budget = math.ceil(keep * prune_after - 1e-9)
            press = streaming_press(make_press(presses[method], 0.0, filters), "knorm", prune_after=prune_after,
                                    keep_ratio=keep, buffer=m2.buffer)
        nll, hit = token_losses(model, chunks, press)
        beyond = slice(budget, None)  # targets at positions > B (0-based target index budget + 1 onward)
        per_chunk[f"{method}/{ratio}/{window}" if protocol == "budget" else f"{protocol}:{method}/{keep}"] = \
            nll[:, beyond].mean(1).numpy()
        low, high = bootstrap_ci(nll[:, beyond].mean(1).numpy())
        rows.append({"protocol": protocol, "method": method, "ratio": ratio if protocol == "budget" else 1 - keep,
                     "keep_ratio": keep, "budget": budget, "window": window,
                     "ppl": float(nll.mean().exp()), "ppl_beyond_budget": float(nll[:, beyond].mean().exp()),
                     "ppl_beyond_ci_low": math.exp(low), "ppl_beyond_ci_high": math.exp(high),
                     "accuracy": float(hit.double().mean()),
                     "full_ppl_beyond_budget": float(full_nll[:, beyond].mean().exp())})
    full = {"ppl": float(full_nll.mean().exp()), "accuracy": float(full_hit.double().mean())}
    return pd.DataFrame(rows), per_chunk, full


def check_trained_length(docs: dict[str, list], trained_length: int) -> None:
    """M3 measures retrieval, not length extrapolation: every position a prompt reaches (BOS, context,
    question, answer but its last byte) must be one the model was trained at."""
    longest = max(len(doc.ids()) - 2 for task_docs in docs.values() for doc in task_docs)
    if longest > trained_length:
        raise ConfigError(f"M3 prompts reach {longest} positions but the model was trained on sequences of "
                          f"{trained_length}: lower method.eval.retrieval.context_length by {longest - trained_length} "
                          "(or more), or train longer sequences (method.train.seq_len)")


def accuracy_table(model, docs: dict[str, list], methods, ratios, query_aware_methods, presses, filters,
                   batch_size: int, desc: str) -> pd.DataFrame:
    """Exact-match accuracy per task x (full cache, press x ratio > 0, query-aware press x ratio > 0),
    with bootstrap CIs and per-depth-bin accuracy."""
    settings = [("full", 0.0, False)] + [(m, r, False) for m in methods for r in ratios if r > 0]
    settings += [(m, r, True) for m in query_aware_methods for r in ratios if r > 0]
    rows = []
    for method, ratio, aware in progress(settings, desc=desc):
        press = None if method == "full" else make_press(presses[method], ratio, filters)
        for task, task_docs in docs.items():
            hits = accuracy_per_prompt(model, task_docs, press, batch_size, aware).numpy()
            low, high = bootstrap_ci(hits)
            depth_bins = np.minimum((np.array([d.depth for d in task_docs]) * 10).astype(int), 9)
            rows.append({"task": task, "method": method, "ratio": ratio, "query_aware": aware,
                         "accuracy": float(hits.mean()), "ci_low": low, "ci_high": high, "prompts": len(hits),
                         **{f"depth_bin_{b}": float(hits[depth_bins == b].mean()) if (depth_bins == b).any() else None
                            for b in range(10)}})
    return pd.DataFrame(rows)


def run_retrieval(model, eval_cfg, presses, corpus: Corpus, words, filters, seed: int,
                  trained_length: int) -> pd.DataFrame:
    m3 = eval_cfg.retrieval
    docs = {task: evaluation_documents(task, m3.prompts, m3.context_length, corpus, words, seed + 10 + i)
            for i, task in enumerate(("passkey", "niah"))}
    check_trained_length(docs, trained_length)
    return accuracy_table(model, docs, m3.methods, m3.ratios, m3.query_aware_methods, presses, filters,
                          m3.batch_size, "M3 retrieval")


def run_ruler(model, eval_cfg, presses, corpus: Corpus, words, filters, seed: int, trained_length: int) -> pd.DataFrame:
    """M5: the mini-RULER tasks evaluated as M3 (query-agnostic prefill)."""
    m5 = eval_cfg.ruler
    docs = {task: ruler_documents(task, m5.prompts, m5.context_length, corpus, words, seed + 20 + i)
            for i, task in enumerate(m5.tasks)}
    check_trained_length(docs, trained_length)
    return accuracy_table(model, docs, m5.methods, m5.ratios, [], presses, filters, m5.batch_size, "M5 mini-RULER")


def run_reconstruction(model, eval_cfg, presses, corpus: Corpus, filters, seed: int) -> pd.DataFrame:
    """M4 for every press in `methods`, and the future-attention oracle as method `oracle` when
    `reconstruction.oracle` is set."""
    m4 = eval_cfg.reconstruction
    chunks = heldout_chunks(corpus.heldout, m4.chunks, m4.prefix + m4.continuation, seed + 2)
    prefix, continuation = chunks[:, :m4.prefix], chunks[:, m4.prefix:]
    reference = continuation_run(model, prefix, continuation, None)
    methods = list(m4.methods) + (["oracle"] if m4.get("oracle", False) else [])
    rows = []
    for method in progress(methods, desc="M4 reconstruction"):
        for ratio in m4.ratios:
            press = (FutureAttentionPress(compression_ratio=ratio, future_queries=reference.queries)
                     if method == "oracle" else make_press(presses[method], ratio, filters))
            compressed = continuation_run(model, prefix, continuation, press)
            errors = reconstruction_error(reference, compressed).numpy()
            low, high = bootstrap_ci(errors)
            rows.append({"method": method, "ratio": ratio, "error": float(errors.mean()), "ci_low": low, "ci_high": high})
    return pd.DataFrame(rows)


def run_kv_mini(cfg: DictConfig, run: RunDir) -> dict[str, Any]:
    device = device_of(cfg.hardware)
    data, method, train = cfg.data, cfg.method, cfg.method.train
    stages = Stages()
    corpus = load_corpus(data.source, data.path, list(data.heldout_works), data.heldout_fraction)
    words = equal_length_words(corpus.words(), data.niah_word_length)
    extra = tuple((float(share), generator_of(kind)) for kind, share in train.get("ruler_mixture", {}).items())
    stream = TrainingStream(corpus, words, train.seq_len, train.batch_size, tuple(train.mixture),
                            train.min_doc_length, cfg.seed, float(train.get("answer_weight", 1.0)), extra)
    began = time.time()
    info = _train(cfg, run, stream, device)
    stages("train", began)
    run.write_table("train_loss", [{"step": s, "loss": l} for s, l in info["losses"]])
    model_dir = run.checkpoint_dir / "model"
    model = load_model(model_dir, device, "sdpa")
    eval_cfg = method.eval
    presses = method.presses

    began = time.time()
    calibration = heldout_chunks(corpus.train, eval_cfg.calibration.sequences, eval_cfg.calibration.length, cfg.seed + 3)
    filters = calibrate_q_filters(model, calibration.split(eval_cfg.calibration.batch_size),
                                  num_samples=eval_cfg.calibration.samples, seed=cfg.seed)
    stages("calibration", began)

    began = time.time()
    m1 = run_correlation(model_dir, device, eval_cfg, corpus, filters, cfg.seed)
    stages("m1", began)
    began = time.time()
    streaming, per_chunk, full = run_streaming(model, eval_cfg, presses, corpus, filters, cfg.seed)
    stages("m2", began)
    began = time.time()
    retrieval = run_retrieval(model, eval_cfg, presses, corpus, words, filters, cfg.seed, train.seq_len)
    stages("m3", began)
    ruler = None
    if eval_cfg.get("ruler", {}).get("enabled", False):
        began = time.time()
        ruler = run_ruler(model, eval_cfg, presses, corpus, words, filters, cfg.seed, train.seq_len)
        stages("m5", began)
    reconstruction = None
    if eval_cfg.reconstruction.enabled:
        began = time.time()
        reconstruction = run_reconstruction(model, eval_cfg, presses, corpus, filters, cfg.seed)
        stages("m4", began)

    claims = evaluate_claims(OmegaConf.to_container(method.claims, resolve=True), m1["heads"], m1["filters"],
                             streaming, per_chunk, retrieval, reconstruction, full["ppl"])
    for name, table in (("heads", m1["heads"]), ("filters", m1["filters"]), ("streaming", streaming),
                        ("retrieval", retrieval), ("ruler", ruler), ("reconstruction", reconstruction)):
        if table is not None:
            run.write_table(name, table.to_dict("records"))
    run.write_table("claims", claims)
    figures.correlation_histogram(m1["heads"], run.path)
    figures.ppl_vs_budget(streaming, run.path)
    figures.accuracy_vs_ratio(retrieval, run.path)

    heads = m1["heads"]
    full_retrieval = retrieval[retrieval.method == "full"].set_index("task").accuracy
    full_ruler = ruler[ruler.method == "full"].set_index("task").accuracy if ruler is not None else pd.Series(dtype=float)
    return {"train/final_loss": info["final_loss"], "train/steps": info["steps"], "train/tokens": info["tokens"],
            "train/seconds": info["seconds"], "model/parameters": parameter_count(model),
            "m1/median_rho_knorm": float(heads.rho_knorm.median()), "m1/median_rho_qfilters": float(heads.rho_qfilters.median()),
            "m1/median_rho_ea": float(heads.rho_ea.median()), "m1/bos_sink_fraction": float(heads.bos_sink.mean()),
            "m2/full_ppl": full["ppl"], "m2/full_accuracy": full["accuracy"],
            **{f"m3/full/{task}": float(acc) for task, acc in full_retrieval.items()},
            **{f"m5/full/{task}": float(acc) for task, acc in full_ruler.items()},
            **stages.seconds, **claim_metrics(claims)}


def _train(cfg: DictConfig, run: RunDir, stream: TrainingStream, device: torch.device) -> dict[str, Any]:
    shape = OmegaConf.to_container(cfg.model.config, resolve=True)
    return train_model(shape, OmegaConf.to_container(cfg.method.train, resolve=True), stream, run.checkpoint_dir,
                       device, cfg.seed)

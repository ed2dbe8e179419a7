"""Q-Filters calibration runs (thesis Sec. 4.2.11; Figs. 4.38, 4.39; spec B.1, G).

`calibrate` (experiment `kv_qfilters_calibrate`): the offline step of Q-Filters, once per model. The
calibration text is cut into `n_sequences` sequences of `context_length` tokens (thesis: 20 of 2048
from a Pile subset), their post-RoPE queries are collected, `num_samples` of them per query head
(3000) go through the SVD, and the filters are written with `save_q_filters` to
`<run>/q_filters.safetensors` (and to `method.export_path` when set, where
`QFiltersPress(filters=<path>)` configs read them). `tables/calibration.csv` records the model,
corpus, sizes, the file's SHA-256 and the command that regenerates it.

`calibration_ablation` (experiment `kv_qfilters_calibration_ablation`): how much the filters depend
on the number of SVD samples (Fig. 4.38: 10 to 3000) and on the calibration corpus (Fig. 4.39). For
every corpus of `data.corpora` the queries are sampled once, at the largest count; the filters of a
smaller count n come from the first n sampled rows, which are exactly the queries a separate
calibration with `num_samples=n` would use (`qfilters.sample_queries`), so each row equals such a
calibration without repeating the forward passes. Filters are compared, per (layer, KV head), by
cosine similarity with the reference filters (the largest count on `method.reference_corpus`). With
`method.perplexity` set, each set of filters also scores the streaming perplexity task
`data.evaluation` under `DecodingPress(QFiltersPress, interval 1, target_size)` (Fig. 4.38's
y-axis). Tables `cosine.csv` (corpus, num_samples, layer, kv_head, cosine) and `ablation.csv`
(corpus, num_samples, cosine mean / min, perplexity); figure `kv_qfilters_calibration_ablation`.
"""

from __future__ import annotations

import hashlib
import math
import shutil
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn

from thesis.core.errors import ConfigError
from thesis.core.evaluate import progress
from thesis.core.hardware import device_of
from thesis.core.plotting import new_figure, save_figure
from thesis.core.rundir import RunDir
from thesis.kvcache.decoding import DecodingPress
from thesis.kvcache.qfilters import (QFiltersPress, calibrate_q_filters, filters_from_queries, query_groups,
                                     sample_queries, save_q_filters)
from thesis.kvcache.runner import load_model
from thesis.kvcache.tasks.streaming_perplexity import streaming_nll

FILTERS_FILE = "q_filters.safetensors"


def filters_of(model: nn.Module, batches: list[torch.Tensor], num_samples: int, method: DictConfig) -> torch.Tensor:
    return calibrate_q_filters(model, batches, num_samples=num_samples, sign_rule=method.sign_rule, seed=method.seed)


def nested_filters(queries: list[torch.Tensor], counts: list[int], groups: int,
                   sign_rule: Literal["sum", "majority"]) -> dict[int, torch.Tensor]:
    """Filters from the first n sampled queries (heads, N, head_dim) per layer, for each n of `counts`."""
    return {count: filters_from_queries([layer[:, :count] for layer in queries], groups, sign_rule)
            for count in counts}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def regenerate_command(cfg: DictConfig, corpus_name: str, corpus: DictConfig) -> str:
    """A command line that recomputes the same filters from the same model and text."""
    text = "null" if corpus.text_path is None else corpus.text_path
    return (f"python -m thesis.run experiment=kv_qfilters_calibrate model.path={cfg.model.path} "
            f"data.corpora.{corpus_name}.text_path={text} data.corpora.{corpus_name}.n_sequences={corpus.n_sequences} "
            f"data.corpora.{corpus_name}.context_length={corpus.context_length} "
            f"method.num_samples={cfg.method.num_samples} method.sign_rule={cfg.method.sign_rule} "
            f"method.seed={cfg.method.seed}")


def calibrate(cfg: DictConfig, run: RunDir) -> dict[str, float]:
    """Calibrate Q-Filters on the single corpus of `data.corpora` and save them."""
    if len(cfg.data.corpora) != 1:
        raise ConfigError(f"kv_qfilters_calibrate calibrates on one corpus; data.corpora has {list(cfg.data.corpora)}")
    model, tokenizer = load_model(cfg.model, device_of(cfg.hardware))
    (name, spec), = cfg.data.corpora.items()
    batches = instantiate(spec, name=name).sequences(tokenizer)
    filters = filters_of(model, batches, cfg.method.num_samples, cfg.method)
    path = run.path / FILTERS_FILE
    save_q_filters(filters, path)
    if cfg.method.export_path:
        export = Path(cfg.method.export_path)
        export.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, export)
    layers, kv_heads, head_dim = filters.shape
    run.write_table("calibration", [{
        "model": cfg.model.path, "corpus": name, "text_path": spec.text_path, "n_sequences": spec.n_sequences,
        "length": spec.context_length + spec.continuation_length, "num_samples": cfg.method.num_samples,
        "sign_rule": cfg.method.sign_rule, "seed": cfg.method.seed, "layers": layers, "kv_heads": kv_heads,
        "head_dim": head_dim, "file": str(path), "export_path": cfg.method.export_path, "sha256": sha256(path),
        "command": regenerate_command(cfg, name, spec)}])
    return {"layers": layers, "kv_heads": kv_heads, "head_dim": head_dim,
            "filter_norm_mean": float(filters.norm(dim=-1).mean())}


def cosine_rows(corpus: str, num_samples: int, filters: torch.Tensor, reference: torch.Tensor) -> list[dict[str, Any]]:
    """Cosine similarity with the reference filters per (layer, KV head)."""
    cosine = F.cosine_similarity(filters.float(), reference.float(), dim=-1)
    return [{"corpus": corpus, "num_samples": num_samples, "layer": layer, "kv_head": head,
             "cosine": float(cosine[layer, head])}
            for layer in range(cosine.shape[0]) for head in range(cosine.shape[1])]


def filtered_perplexity(model: nn.Module, sequences: list[torch.Tensor], context_length: int,
                        filters: torch.Tensor, settings: DictConfig) -> float:
    """Streaming perplexity with the cache held at `target_size` pairs by Q-Filters."""
    press = DecodingPress(QFiltersPress(filters=filters), compression_interval=1, target_size=settings.target_size,
                          hidden_states_buffer_size=settings.hidden_states_buffer_size)
    device = next(model.parameters()).device
    scored = [streaming_nll(model, ids.to(device), context_length, press) for ids in sequences]
    return math.exp(sum(s.nll_sum for s in scored) / sum(s.n_tokens for s in scored))


def calibration_ablation(cfg: DictConfig, run: RunDir) -> dict[str, float]:
    """Filters for each corpus x number of SVD samples, compared with the reference filters."""
    method = cfg.method
    if method.reference_corpus not in cfg.data.corpora:
        raise ConfigError(f"method.reference_corpus={method.reference_corpus!r} is not in data.corpora "
                          f"({', '.join(cfg.data.corpora)})")
    model, tokenizer = load_model(cfg.model, device_of(cfg.hardware))
    reference_count = max(method.sample_counts)
    corpora = [method.reference_corpus] + [name for name in cfg.data.corpora if name != method.reference_corpus]
    batches = {name: instantiate(cfg.data.corpora[name], name=name).sequences(tokenizer) for name in corpora}
    evaluation = None
    if method.perplexity is not None:
        task = instantiate(cfg.data.evaluation)
        evaluation = (task.sequences(tokenizer), task.context_length)
    counts = list(method.sample_counts)
    filters_by = {}
    for corpus in progress(corpora, desc="corpora"):
        sample = sample_queries(model, batches[corpus], reference_count, method.seed)
        for count, filters in nested_filters(sample.queries, counts, query_groups(model), method.sign_rule).items():
            filters_by[corpus, count] = filters
    reference = filters_by[method.reference_corpus, reference_count]
    cosines, summary, metrics = [], [], {}
    for corpus, count in progress([(c, n) for c in corpora for n in counts], desc="corpora x samples"):
        filters = filters_by[corpus, count]
        rows = cosine_rows(corpus, count, filters, reference)
        cosines.extend(rows)
        values = torch.tensor([row["cosine"] for row in rows])
        row = {"corpus": corpus, "num_samples": count, "cosine_mean": float(values.mean()),
               "cosine_min": float(values.min())}
        if evaluation is not None:
            row["perplexity"] = filtered_perplexity(model, *evaluation, filters, method.perplexity)
        summary.append(row)
        metrics.update({f"{corpus}/{count}/{key}": value for key, value in row.items()
                        if key not in ("corpus", "num_samples")})
    run.write_table("cosine", cosines)
    run.write_table("ablation", summary)
    ablation_figure(pd.DataFrame(summary), run.path)
    return metrics


def ablation_figure(summary: pd.DataFrame, out: Path) -> None:
    """Cosine to the reference filters (and perplexity, if measured) against the number of SVD samples."""
    panels = ["cosine_mean"] + (["perplexity"] if "perplexity" in summary else [])
    fig, axes = new_figure(4.5 * len(panels), 3.2, ncols=len(panels))
    for ax, column in zip(axes if len(panels) > 1 else [axes], panels):
        for corpus, part in summary.groupby("corpus"):
            part = part.sort_values("num_samples")
            ax.plot(part.num_samples, part[column], marker="o", label=corpus)
        ax.set_xscale("log")
        ax.set_xlabel("SVD samples per head")
        ax.set_ylabel("mean cosine to reference filters" if column == "cosine_mean" else "streaming perplexity")
        ax.legend(fontsize=7)
    save_figure(fig, out, "kv_qfilters_calibration_ablation")

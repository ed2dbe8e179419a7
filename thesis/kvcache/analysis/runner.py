"""Runner of the Chapter 4 analysis experiments (`kv_knorm_alr`, `kv_knorm_key_sparsity`,
`kv_qfilters_geometry`, `kv_ea_activation_stats`, `kv_ea_score_correlation`).

Loads the model (`model.path`: a hub id at paper scale, the tiny Llama fixture at smoke scale) and its
tokenizer, cuts `data.chunks` into token windows (`chunks.text_chunks`), then runs each analysis of
`method.analyses` with its settings `method.<analysis>`. Each analysis writes its tables
(`<run>/tables/*.csv`, tidy: one row per layer, head, ...) and figures (`<run>/figures/`) and returns
its headline metrics, prefixed by its name.
"""

from __future__ import annotations

from typing import Any, Callable

from omegaconf import DictConfig

from thesis.core.errors import ConfigError
from thesis.core.hardware import device_of
from thesis.core.rundir import RunDir
from thesis.kvcache.analysis import activation_stats, alr, key_sparsity, qk_geometry, score_correlation
from thesis.kvcache.analysis.chunks import text_chunks
from thesis.kvcache.runner import load_model

ANALYSES: dict[str, Callable[..., dict[str, Any]]] = {
    "alr": alr.run,
    "key_sparsity": key_sparsity.run,
    "qk_geometry": qk_geometry.run,
    "activation_stats": activation_stats.run,
    "score_correlation": score_correlation.run,
}


def run_analysis(cfg: DictConfig, run: RunDir) -> dict[str, Any]:
    unknown = [name for name in cfg.method.analyses if name not in ANALYSES]
    if unknown:
        raise ConfigError(f"method.analyses holds {unknown}; choose among {sorted(ANALYSES)}")
    model, tokenizer = load_model(cfg.model, device_of(cfg.hardware))
    data = cfg.data.chunks
    chunks = text_chunks(tokenizer, data.path, data.n_chunks, data.chunk_length, data.text_field, data.source)
    metrics: dict[str, Any] = {}
    for name in cfg.method.analyses:
        metrics.update(ANALYSES[name](model, chunks, cfg.method[name], run))
    return metrics

"""Runner `thesis.kvcache.runner.evaluate_presses`: every press x compression ratio x task of a config.

One model is loaded (`model.path`: a hub id at paper scale, the tiny fixture at smoke scale) with
its tokenizer; each task of `data.tasks` is built once; then for each press of `method.presses`
and each ratio of `method.compression_ratios` the press is rebuilt at that ratio and every task is
evaluated under it (`tasks/perplexity.py`, `tasks/streaming_perplexity.py`, `tasks/generation.py`).
A press given as null is the uncompressed model, evaluated at ratio 0 only. A wrapper press (one
with a `press` field, such as AdaKV) gets the ratio on the press it wraps; `DecodingPress` ignores
it (its budget is `target_size`: decoding configs name one press per budget, at ratio 0). Q-Filters
are loaded from `filters` when it is a path, or calibrated on the model's own queries over random
ids when it gives `random_sequences` and `length` (spec F.a; a stand-in for calibration text);
DuoAttention's head patterns likewise come from `patterns`, a folder of the authors' release or
`{random_sequences, length}` for kvpress's on-the-fly estimate.

Writes `tables/scores.csv` (press, ratio, task, metric, value, achieved_ratio, cache_bytes; one row
per press x ratio x task x metric, sub-tasks of a benchmark as `task/subset`; perplexity tasks also
report next-token `accuracy`), `tables/predictions.csv`, and for perplexity tasks
`tables/positions.csv` (`tasks.perplexity.position_rows`, bins of `method.bin_size` positions,
default 256); returns `<press>/<ratio>/<task>/<metric>` metrics.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any, Mapping

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from thesis.core.errors import ConfigError, DataNotFoundError
from thesis.core.evaluate import progress
from thesis.core.hardware import device_of
from thesis.core.models import load_hf_causal_lm, load_hf_tokenizer
from thesis.core.rundir import RunDir
from thesis.kvcache.duo_attention import HeadPatterns, head_patterns
from thesis.kvcache.press import PressBase
from thesis.kvcache.qfilters import calibrate_q_filters, load_q_filters
from thesis.kvcache.tasks.base import GenerationTask, PerplexityTask
from thesis.kvcache.tasks.generation import greedy_answer
from thesis.kvcache.tasks.perplexity import compressed_nll, position_rows, totals
from thesis.kvcache.tasks.streaming_perplexity import StreamingLanguageModelingTask, streaming_nll


def load_model(model_cfg: DictConfig, device: torch.device) -> tuple[nn.Module, Any]:
    model = load_hf_causal_lm(model_cfg.path, dtype=model_cfg.dtype, device_map=model_cfg.device_map)
    model.set_attn_implementation(model_cfg.attn_implementation)
    if model_cfg.device_map is None:
        model = model.to(device)
    return model.eval(), load_hf_tokenizer(model_cfg.tokenizer or model_cfg.path)


def q_filters(source: Any, model: nn.Module) -> torch.Tensor:
    """Filters from a file saved by `save_q_filters`, or calibrated on random ids."""
    if isinstance(source, str):
        if not Path(source).is_file():
            raise DataNotFoundError(f"Q-Filters file {source} not found: write it with `python -m thesis.run "
                                    "experiment=kv_qfilters_calibrate method.export_path=<this path>` (same model), "
                                    "or give `filters: {random_sequences, length}`")
        return load_q_filters(source)
    if isinstance(source, Mapping) and {"random_sequences", "length"} <= set(source):
        generator = torch.Generator().manual_seed(0)
        ids = torch.randint(0, model.config.vocab_size, (source["random_sequences"], source["length"]),
                            generator=generator)
        return calibrate_q_filters(model, [ids])
    raise ConfigError(f"Q-Filters `filters` must be a file saved by save_q_filters or "
                      f"{{random_sequences, length}}; got {source!r}")


def duo_patterns(source: Any, model: nn.Module) -> HeadPatterns:
    """DuoAttention head patterns from a folder of the authors' release, or estimated on random ids."""
    if isinstance(source, str) and not Path(source).is_dir():
        raise DataNotFoundError(f"DuoAttention patterns folder {source} not found: copy the model's folder of "
                                "attn_patterns/ from the DuoAttention release there, or give "
                                "`patterns: {random_sequences, length}` for kvpress's on-the-fly estimate")
    try:
        return head_patterns(source, model)
    except ValueError as error:
        raise ConfigError(str(error)) from error


def build_press(spec: Mapping[str, Any], ratio: float, model: nn.Module, prepared: dict[str, Any]) -> PressBase:
    """The press of `spec` at compression ratio `ratio` (on the wrapped press for wrappers).

    What a press derives from the model (Q-Filters, DuoAttention head patterns) is computed once per
    source and kept in `prepared` for the next ratio or press."""
    spec = dict(spec)
    if "press" in spec:
        inner = build_press(spec.pop("press"), ratio, model, prepared)
        return instantiate(spec, _partial_=True)(press=inner)
    def once(field: str, derive) -> Any:
        source = spec.pop(field)
        key = f"{field} {source!r}"
        if key not in prepared:
            prepared[key] = derive(source, model)
        return prepared[key]

    arguments: dict[str, Any] = {"compression_ratio": ratio}
    if "filters" in spec:
        arguments["filters"] = once("filters", q_filters)
    if "patterns" in spec:
        patterns = once("patterns", duo_patterns)
        arguments.update(head_scores=patterns.head_scores, sink_size=patterns.sink_size,
                         recent_size=patterns.recent_size)
    return instantiate(spec, _partial_=True)(**arguments)


def evaluate_task(model: nn.Module, tokenizer: Any, task: Any, inputs: list, press: PressBase | None,
                  query_aware: bool, bin_size: int = 256
                  ) -> tuple[dict[str, dict[str, list[float]]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Per group (task or task/subset): metric -> values, with `achieved_ratio` and `cache_bytes`
    among them; the predictions of a generation task; the per-position rows of a perplexity task."""
    groups: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    predictions = []
    if isinstance(task, PerplexityTask):
        device = next(model.parameters()).device
        nll_of = streaming_nll if isinstance(task, StreamingLanguageModelingTask) else compressed_nll
        scored = [nll_of(model, ids.to(device), task.context_length, press) for ids in inputs]
        group = groups[task.name]
        group.update({metric: [value] for metric, value in totals(scored).items()})
        group.update(achieved_ratio=[s.stats.achieved_ratio for s in scored],
                     cache_bytes=[s.stats.cache_bytes for s in scored])
        return groups, predictions, position_rows(scored, task.context_length, bin_size)
    for sample in inputs:
        answer = greedy_answer(model, tokenizer, sample, press, query_aware)
        group = groups[f"{task.name}/{sample.subset}" if sample.subset else task.name]
        for metric, value in task.score(answer.text, sample).items():
            group[metric].append(value)
        group["achieved_ratio"].append(answer.stats.achieved_ratio)
        group["cache_bytes"].append(answer.stats.cache_bytes)
        predictions.append({"task": task.name, "id": sample.id, "prediction": answer.text,
                            "answers": " | ".join(sample.answers)})
    return groups, predictions, []


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def evaluate_presses(cfg: DictConfig, run: RunDir) -> dict[str, float]:
    model, tokenizer = load_model(cfg.model, device_of(cfg.hardware))
    tasks = [instantiate(spec, name=name) for name, spec in cfg.data.tasks.items()]
    for task in tasks:
        if not isinstance(task, (GenerationTask, PerplexityTask)):
            raise ConfigError(f"data.tasks.{task.name} is neither a generation nor a perplexity task")
    inputs = {task.name: task.sequences(tokenizer) if isinstance(task, PerplexityTask) else task.samples(tokenizer)
              for task in tasks}
    settings = [(name, ratio) for name, spec in cfg.method.presses.items()
                for ratio in ([0.0] if spec is None else cfg.method.compression_ratios)]
    filters: dict[str, torch.Tensor] = {}
    rows, predictions, positions, metrics = [], [], [], {}
    for name, ratio in progress(settings, desc="presses x ratios"):
        spec = cfg.method.presses[name]
        press = None if spec is None else build_press(OmegaConf.to_container(spec, resolve=True), ratio, model, filters)
        for task in tasks:
            groups, answers, bins = evaluate_task(model, tokenizer, task, inputs[task.name], press,
                                                  cfg.method.query_aware, cfg.method.get("bin_size", 256))
            predictions.extend({"press": name, "ratio": ratio, **answer} for answer in answers)
            positions.extend({"press": name, "ratio": ratio, "task": task.name, **row} for row in bins)
            for group_name, values in groups.items():
                achieved, cache_bytes = mean(values.pop("achieved_ratio")), mean(values.pop("cache_bytes"))
                for metric, scores in values.items():
                    rows.append({"press": name, "ratio": ratio, "task": group_name, "metric": metric,
                                 "value": mean(scores), "achieved_ratio": achieved, "cache_bytes": cache_bytes})
                    metrics[f"{name}/{ratio:g}/{group_name}/{metric}"] = mean(scores)
    run.write_table("scores", rows)
    if predictions:
        run.write_table("predictions", predictions)
    if positions:
        run.write_table("positions", positions)
    return metrics

r"""Decoding-regime evaluation of thesis 4.3 (Table 4.4 MATH-500, Fig. 4.44 AIME25): reasoning models
answer math problems while a press holds their cache during generation; accuracy per method x budget,
with the final cache measured.

`greedy_decode`: the whole prompt (problem, instruction, chat template when asked) is prefilled under
the press (a decoding press leaves it whole), then tokens are chosen by argmax, one call each, until a
stop token or `max_new_tokens`; the stop token is kept in the output, as `generate` does. The thesis
does not give sampling settings; the kvpress pipeline it ran decodes greedily. After the last call the
final cache is measured: achieved ratio and bytes against every token it has seen (prompt and
generated tokens but the last, which is never fed), the definition of "N x" (spec 0).

`evaluate_decoding` (runner of `kv_ea_math500`, `kv_ea_aime25`): each press of `method.presses` is a
scoring press (its ratio unused) wrapped, per value of `method.budgets`, in `FactorDecodingPress`
(`budget: factor`, the value is N, the cache cut to 1/N of the tokens seen) or `DecodingPress`
(`budget: tokens`, the value is `target_size`, Fig. 4.44's axis), with `method.decoding`'s schedule.
Budget 0 is the uncompressed model, run once as press `none`. Answers are the last `\boxed{}`.

Writes `tables/scores.csv` (press, budget, task, metric, value, achieved_ratio, achieved_factor,
cache_bytes; metrics accuracy and generated_tokens) and `tables/predictions.csv` (boxed answer,
reference, generated tokens, final-cache ratio and the generation's last `prediction_tail` characters);
returns `<press>/<budget>/<task>/<metric>` metrics.
"""

from __future__ import annotations

from collections import defaultdict
from contextlib import nullcontext
from dataclasses import dataclass
from itertools import islice
from typing import Any, Mapping

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn
from transformers import DynamicCache

from thesis.core.errors import ConfigError
from thesis.core.evaluate import progress
from thesis.core.hardware import device_of
from thesis.core.rundir import RunDir
from thesis.kvcache.decoding import DecodingPress
from thesis.kvcache.decoding_budget import FactorDecodingPress
from thesis.kvcache.greedy import greedy_tokens, last_logits
from thesis.kvcache.press import PressBase, tokens_seen
from thesis.kvcache.runner import build_press, load_model
from thesis.kvcache.tasks.base import GenerationTask, Sample
from thesis.kvcache.tasks.cache_stats import CacheStats, cache_stats
from thesis.kvcache.tasks.metrics import last_boxed

BUDGET_KINDS = ("factor", "tokens")


@dataclass(frozen=True)
class Generation:
    tokens: list[int]
    prompt_tokens: int
    tokens_seen: int
    stats: CacheStats
    cache: DynamicCache


def stop_token_ids(model: nn.Module, tokenizer: Any) -> set[int]:
    """End-of-sequence ids of the model's generation config and of the tokenizer."""
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = set(configured if isinstance(configured, (list, tuple)) else [configured])
    ids.add(tokenizer.eos_token_id)
    return {int(i) for i in ids if i is not None}


def prompt_ids(tokenizer: Any, sample: Sample, chat_template: bool) -> Tensor:
    """(1, n) ids of the problem and instruction, in the model's chat format when `chat_template`."""
    user = sample.context + sample.question
    if not chat_template:
        return tokenizer(user + sample.answer_prefix, return_tensors="pt").input_ids
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError(f"method.chat_template is true but the tokenizer {tokenizer.name_or_path!r} has no chat "
                          "template; set method.chat_template=false to prompt with plain text.")
    text = tokenizer.apply_chat_template([{"role": "user", "content": user}], tokenize=False,
                                         add_generation_prompt=True)
    return tokenizer(text + sample.answer_prefix, add_special_tokens=False, return_tensors="pt").input_ids


@torch.no_grad()
def greedy_decode(model: nn.Module, input_ids: Tensor, press: PressBase | None, max_new_tokens: int,
                  stop_ids: set[int]) -> Generation:
    """Greedy generation of one prompt with `press` active from prefill to the last token."""
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1; got {max_new_tokens}.")
    input_ids = input_ids.to(next(model.parameters()).device)
    cache, generated = DynamicCache(config=model.config), []
    with press(model) if press is not None else nullcontext():
        for token in islice(greedy_tokens(model, cache, last_logits(model, input_ids, cache)), max_new_tokens):
            generated.append(int(token))
            if int(token) in stop_ids:
                break
    seen = tokens_seen(cache)
    return Generation(generated, input_ids.shape[1], seen, cache_stats(model, cache, 1, seen), cache)


def decoding_press(spec: Mapping[str, Any], budget_kind: str, budget: float, schedule: Mapping[str, Any],
                   model: nn.Module, filters: dict[str, Tensor]) -> PressBase:
    """The scoring press of `spec` wrapped in the decoding press of `budget` (module docstring)."""
    inner = build_press(spec, 0.0, model, filters)
    if budget_kind == "factor":
        return FactorDecodingPress(press=inner, compression_factor=float(budget), **schedule)
    if isinstance(budget, float) and not budget.is_integer():
        raise ConfigError(f"a `tokens` budget is a target_size in pairs per KV head; got {budget}.")
    return DecodingPress(press=inner, target_size=int(budget), **schedule)


def evaluate_decoding(cfg: DictConfig, run: RunDir) -> dict[str, float]:
    method = cfg.method
    if method.budget not in BUDGET_KINDS:
        raise ConfigError(f"method.budget must be one of {', '.join(BUDGET_KINDS)}; got {method.budget!r}.")
    model, tokenizer = load_model(cfg.model, device_of(cfg.hardware))
    tasks = [instantiate(spec, name=name) for name, spec in cfg.data.tasks.items()]
    for task in tasks:
        if not isinstance(task, GenerationTask):
            raise ConfigError(f"data.tasks.{task.name} is not a generation task; decoding runs answer problems.")
    samples = {task.name: task.samples(tokenizer) for task in tasks}
    stop_ids = stop_token_ids(model, tokenizer)
    schedule = OmegaConf.to_container(method.decoding, resolve=True)
    settings = [("none", 0)] if 0 in method.budgets else []
    settings += [(name, budget) for name in method.presses for budget in method.budgets if budget != 0]
    filters: dict[str, Tensor] = {}
    rows, predictions, metrics = [], [], {}
    for name, budget in progress(settings, desc="presses x budgets"):
        press = None if budget == 0 else decoding_press(
            OmegaConf.to_container(method.presses[name], resolve=True), method.budget, budget, schedule, model, filters)
        for task in tasks:
            values: dict[str, list[float]] = defaultdict(list)
            for sample in samples[task.name]:
                generation = greedy_decode(model, prompt_ids(tokenizer, sample, method.chat_template), press,
                                           sample.max_new_tokens, stop_ids)
                text = tokenizer.decode(generation.tokens, skip_special_tokens=True)
                for metric, value in task.score(text, sample).items():
                    values[metric].append(value)
                values["generated_tokens"].append(len(generation.tokens))
                ratio = generation.stats.achieved_ratio
                values["achieved_ratio"].append(ratio)
                values["achieved_factor"].append(1 / (1 - ratio))
                values["cache_bytes"].append(generation.stats.cache_bytes)
                predictions.append({"press": name, "budget": budget, "task": task.name, "id": sample.id,
                                    "boxed": last_boxed(text), "answer": sample.answers[0],
                                    "generated_tokens": len(generation.tokens), "achieved_ratio": ratio,
                                    "tail": text[-method.prediction_tail:]})
            measured = {key: mean(values.pop(key)) for key in ("achieved_ratio", "achieved_factor", "cache_bytes")}
            for metric, scores in values.items():
                rows.append({"press": name, "budget": budget, "task": task.name, "metric": metric,
                             "value": mean(scores), **measured})
                metrics[f"{name}/{budget:g}/{task.name}/{metric}"] = mean(scores)
    run.write_table("scores", rows)
    run.write_table("predictions", predictions)
    return metrics


def mean(values: list[float]) -> float:
    return sum(values) / len(values)

"""Runners of the cost experiments of Chapter 4: time to first token (thesis 4.2, Fig. 4.31c) and peak
memory against the prompt length (thesis 4.3, Fig. 4.45a).

Both feed seeded random ids (the cost of a prefill does not depend on the words) and build each press
with `runner.build_press` (Q-Filters calibrated once, before any timing).

- `time_to_first_token` (`kv_qfilters_ttft`): for each press x ratio, the prompt of `data.prompt_tokens`
  tokens is prefilled under the press (every layer scored and compressed right after its attention)
  and the first token is chosen from the last logits: that wall time is the TTFT. `method.warmup`
  untimed runs, then `method.repeats` timed ones; the table keeps their median and minimum. On a GPU
  the time is read from CUDA events around the call (synchronised), on a CPU from `time.perf_counter`.
- `peak_memory` (`kv_ea_memory`): for each length of `data.lengths` and each press x ratio, the prompt
  is prefilled under the press and `method.decode_tokens` tokens are decoded greedily on the compressed
  cache; on a GPU the peak of `torch.cuda.max_memory_allocated` over that call (weights included, as
  the figure's axis), on a CPU no peak (left empty). Cache bytes are measured on the cache after the
  prefill, next to the bytes the uncompressed cache would take, L x H_kv x n x d x 2 x bytes per
  element (thesis 4.1.1), both from `tasks/cache_stats.py`.

A press given as null is the uncompressed model, run at ratio 0 only. Every row records the device.
Writes `tables/ttft.csv` or `tables/memory.csv`; returns metrics `<press>/<ratio>/...`.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from contextlib import nullcontext
from typing import TypeVar

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn
from transformers import DynamicCache

from thesis.core.errors import ConfigError
from thesis.core.evaluate import progress
from thesis.core.hardware import device_of
from thesis.core.models import with_cache
from thesis.core.rundir import RunDir
from thesis.kvcache.press import PressBase
from thesis.kvcache.runner import build_press, load_model
from thesis.kvcache.tasks.cache_stats import CacheStats, cache_stats

T = TypeVar("T")


def timed(call: Callable[[], T], device: torch.device) -> tuple[float, T]:
    """Seconds `call` takes on `device` (CUDA events on a GPU, perf_counter otherwise) and its result."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize(device)
        start.record()
        result = call()
        end.record()
        torch.cuda.synchronize(device)
        return start.elapsed_time(end) / 1000, result
    begin = time.perf_counter()
    result = call()
    return time.perf_counter() - begin, result


@torch.no_grad()
def first_token(model: nn.Module, input_ids: Tensor, press: PressBase | None) -> tuple[Tensor, DynamicCache]:
    """Prefill `input_ids` under the press and pick the first token; the compressed cache with it."""
    cache = DynamicCache(config=model.config)
    with press(model) if press is not None else nullcontext():
        logits = model(input_ids=input_ids, **with_cache(model, cache), logits_to_keep=1).logits
    return logits[:, -1].argmax(-1, keepdim=True), cache


@torch.no_grad()
def prefill_and_decode(model: nn.Module, input_ids: Tensor, press: PressBase | None,
                       decode_tokens: int) -> CacheStats:
    """Prefill under the press, then `decode_tokens` greedy steps on the compressed cache; what the cache
    held right after the prefill."""
    cache = DynamicCache(config=model.config)
    with press(model) if press is not None else nullcontext():
        logits = model(input_ids=input_ids, **with_cache(model, cache), logits_to_keep=1).logits
        after_prefill = cache_stats(model, cache, input_ids.shape[0], input_ids.shape[1])
        for _ in range(decode_tokens):
            logits = model(input_ids=logits[:, -1].argmax(-1, keepdim=True), **with_cache(model, cache)).logits
    return after_prefill


def random_prompt(model: nn.Module, tokens: int, seed: int) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, model.config.vocab_size, (1, tokens), generator=generator)


def press_settings(method: DictConfig, model: nn.Module) -> list[tuple[str, float, PressBase | None]]:
    """(name, ratio, press) for every press of `method.presses` at every ratio (null: ratio 0 only)."""
    filters: dict[str, Tensor] = {}
    settings = []
    for name, spec in method.presses.items():
        for ratio in [0.0] if spec is None else method.compression_ratios:
            press = None if spec is None else build_press(OmegaConf.to_container(spec, resolve=True), ratio, model,
                                                          filters)
            settings.append((name, float(ratio), press))
    return settings


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def time_to_first_token(cfg: DictConfig, run: RunDir) -> dict[str, float]:
    if cfg.method.repeats < 1:
        raise ConfigError(f"method.repeats is the number of timed runs, at least 1; got {cfg.method.repeats}")
    device = device_of(cfg.hardware)
    model, _ = load_model(cfg.model, device)
    model_device = next(model.parameters()).device
    prompt = random_prompt(model, cfg.data.prompt_tokens, cfg.data.seed).to(model_device)
    rows, metrics = [], {}
    for name, ratio, press in progress(press_settings(cfg.method, model), desc="presses x ratios"):
        for _ in range(cfg.method.warmup):
            first_token(model, prompt, press)
        seconds = []
        for _ in range(cfg.method.repeats):
            elapsed, (_, cache) = timed(lambda: first_token(model, prompt, press), model_device)
            seconds.append(elapsed)
        stats = cache_stats(model, cache, 1, prompt.shape[1])
        median_ms = 1000 * statistics.median(seconds)
        rows.append({"press": name, "ratio": ratio, "compression_factor": 1 / (1 - ratio),
                     "prompt_tokens": prompt.shape[1], "ttft_ms": median_ms, "ttft_ms_min": 1000 * min(seconds),
                     "repeats": len(seconds), "achieved_ratio": stats.achieved_ratio,
                     "cache_bytes": stats.cache_bytes, "device": device_name(model_device)})
        metrics[f"{name}/{ratio:g}/ttft_ms"] = median_ms
    run.write_table("ttft", rows)
    return metrics


def peak_memory(cfg: DictConfig, run: RunDir) -> dict[str, float]:
    device = device_of(cfg.hardware)
    model, _ = load_model(cfg.model, device)
    model_device = next(model.parameters()).device
    on_gpu = model_device.type == "cuda"
    rows, metrics = [], {}
    settings = list(press_settings(cfg.method, model))
    for length in progress(list(cfg.data.lengths), desc="lengths"):
        prompt = random_prompt(model, length, cfg.data.seed).to(model_device)
        for name, ratio, press in settings:
            if on_gpu:
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(model_device)
            stats = prefill_and_decode(model, prompt, press, cfg.method.decode_tokens)
            peak = torch.cuda.max_memory_allocated(model_device) if on_gpu else None
            rows.append({"press": name, "ratio": ratio, "length": length, "peak_memory_bytes": peak,
                         "cache_bytes": stats.cache_bytes,
                         "uncompressed_cache_bytes": stats.uncompressed_bytes,
                         "achieved_ratio": stats.achieved_ratio, "decode_tokens": cfg.method.decode_tokens,
                         "device": device_name(model_device)})
            metrics[f"{name}/{ratio:g}/{length}/cache_bytes"] = stats.cache_bytes
            if peak is not None:
                metrics[f"{name}/{ratio:g}/{length}/peak_memory_bytes"] = peak
    run.write_table("memory", rows)
    return metrics

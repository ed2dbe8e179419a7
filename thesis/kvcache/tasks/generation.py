"""Answering a sample under a press: compress the context, append the question, decode greedily.

The context is prefilled with the press active (prefill regime, spec 0); the question and answer
prefix follow uncompressed, then tokens are chosen by argmax until `max_new_tokens` or the end-of-
sequence token. Everything runs inside the press context, which gives new tokens their absolute
positions and each layer its own mask. With `query_aware`, the question is part of the compressed
prefill instead (the KNorm runs of thesis 4.1).
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from itertools import islice
from typing import Any

import torch
from torch import nn
from transformers import DynamicCache

from thesis.kvcache.greedy import greedy_tokens, last_logits
from thesis.kvcache.press import PressBase
from thesis.kvcache.tasks.base import Sample
from thesis.kvcache.tasks.cache_stats import CacheStats, cache_stats


@dataclass(frozen=True)
class Answer:
    text: str
    context_tokens: int
    stats: CacheStats


@torch.no_grad()
def greedy_answer(model: nn.Module, tokenizer: Any, sample: Sample, press: PressBase | None,
                  query_aware: bool = False) -> Answer:
    device = next(model.parameters()).device
    prefill_text = sample.context + sample.question if query_aware else sample.context
    suffix_text = (sample.answer_prefix if query_aware else sample.question + sample.answer_prefix)
    context = tokenizer(prefill_text, return_tensors="pt").input_ids.to(device)
    suffix = tokenizer(suffix_text, add_special_tokens=False, return_tensors="pt").input_ids.to(device)
    cache = DynamicCache(config=model.config)
    generated: list[int] = []
    with press(model) if press is not None else nullcontext():
        logits = last_logits(model, context, cache)
        stats = cache_stats(model, cache, 1, context.shape[1])
        if suffix.shape[1]:
            logits = last_logits(model, suffix, cache)
        for token in islice(greedy_tokens(model, cache, logits), sample.max_new_tokens):
            if int(token) == tokenizer.eos_token_id:
                break
            generated.append(int(token))
    return Answer(tokenizer.decode(generated, skip_special_tokens=True), context.shape[1], stats)

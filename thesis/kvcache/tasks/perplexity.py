"""Language-modelling perplexity under compression: compress a context, score what follows it.

The context is prefilled with the press active, so every layer's cache is compressed right after
its attention; the continuation is then scored in one forward pass on that cache, still inside the
press context, which gives the continuation its absolute positions (press README, "Positions").
The first continuation token is predicted by the prefill's last logits (not affected by the
eviction, which happens after each layer has attended), the others by the continuation pass.
This is the prefill regime; the thesis's streaming LM experiments (cache held at a budget while
decoding) are `streaming_perplexity.py` with a `DecodingPress`.

Token sources: seeded random ids (spec F.a, smoke) or consecutive chunks of a plain-text file.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import DynamicCache

from thesis.core.errors import DataNotFoundError
from thesis.core.models import with_cache
from thesis.kvcache.press import PressBase
from thesis.kvcache.tasks.base import PerplexityTask
from thesis.kvcache.tasks.cache_stats import CacheStats, cache_stats


@dataclass(frozen=True)
class Scored:
    nll_sum: float
    n_tokens: int
    stats: CacheStats


@torch.no_grad()
def compressed_nll(model: nn.Module, input_ids: Tensor, context_length: int, press: PressBase | None) -> Scored:
    """Summed negative log-likelihood of input_ids[:, context_length:] given the compressed context."""
    if not 0 < context_length < input_ids.shape[1]:
        raise ValueError(f"context_length must leave a continuation: 0 < {context_length} < {input_ids.shape[1]}.")
    cache = DynamicCache(config=model.config)
    context, continuation = input_ids[:, :context_length], input_ids[:, context_length:]
    with press(model) if press is not None else nullcontext():
        first = model(input_ids=context, **with_cache(model, cache), logits_to_keep=1).logits
        stats = cache_stats(model, cache, input_ids.shape[0], context_length)
        rest = model(input_ids=continuation[:, :-1], **with_cache(model, cache)).logits if continuation.shape[1] > 1 else first[:, :0]
    logits = torch.cat([first, rest], dim=1).float()
    nll = F.cross_entropy(logits.flatten(0, 1), continuation.flatten(), reduction="sum")
    return Scored(float(nll), continuation.numel(), stats)


class LanguageModelingTask(PerplexityTask):
    """`n_sequences` sequences of context_length + continuation_length tokens."""

    def __init__(self, context_length: int, continuation_length: int, n_sequences: int, name: str = "lm",
                 text_path: str | Path | None = None, seed: int = 0) -> None:
        self.name, self.context_length, self.continuation_length = name, context_length, continuation_length
        self.n_sequences, self.text_path, self.seed = n_sequences, text_path, seed

    def sequences(self, tokenizer: Any) -> list[Tensor]:
        length = self.context_length + self.continuation_length
        if self.text_path is None:
            generator = torch.Generator().manual_seed(self.seed)
            return [torch.randint(0, len(tokenizer), (1, length), generator=generator) for _ in range(self.n_sequences)]
        path = Path(self.text_path)
        if not path.is_file():
            raise DataNotFoundError(f"{path} not found: put the evaluation text there as one plain-text file "
                                    "(e.g. Wikipedia or Pile documents joined), or set text_path=null for random ids")
        ids = tokenizer(path.read_text(encoding="utf-8"), add_special_tokens=False, return_tensors="pt").input_ids
        if ids.shape[1] < length * self.n_sequences:
            raise DataNotFoundError(f"{path} holds {ids.shape[1]} tokens, fewer than {self.n_sequences} sequences of "
                                    f"{length}: add text or lower n_sequences")
        return [ids[:, i * length:(i + 1) * length] for i in range(self.n_sequences)]

"""Language-modelling perplexity under compression: compress a context, score what follows it.

The context is prefilled with the press active, so every layer's cache is compressed right after
its attention; the continuation is then scored in one forward pass on that cache, still inside the
press context, which gives the continuation its absolute positions (press README, "Positions").
The first continuation token is predicted by the prefill's last logits (not affected by the
eviction, which happens after each layer has attended), the others by the continuation pass.
This is the prefill regime; the thesis's streaming LM experiments (cache held at a budget while
decoding) are `streaming_perplexity.py` with a `DecodingPress`.

Besides the totals, every scored token keeps its negative log-likelihood and whether the argmax of
its logits was the token (next-token accuracy): thesis Figs. 4.3, 4.6 and 4.10-4.13 plot perplexity
and accuracy along the position, which `position_rows` bins.

Token sources: seeded random ids (spec F.a, smoke) or consecutive chunks of a plain-text file.
"""

from __future__ import annotations

import math
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
    """Totals of a scored continuation, and per token (batch, continuation) its NLL and whether the
    model's argmax was the token."""

    nll_sum: float
    n_tokens: int
    stats: CacheStats
    token_nll: Tensor
    token_correct: Tensor


def scored_tokens(logits: Tensor, targets: Tensor, stats: CacheStats) -> Scored:
    """Scored from logits (batch, T, vocab) predicting targets (batch, T)."""
    logits = logits.float()
    token_nll = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
    token_correct = logits.argmax(dim=-1) == targets
    return Scored(float(token_nll.sum()), targets.numel(), stats, token_nll.cpu(), token_correct.cpu())


def position_rows(scored: list[Scored], context_length: int, bin_size: int) -> list[dict[str, float]]:
    """One row per bin of `bin_size` positions: mean NLL, perplexity and accuracy of the tokens whose
    absolute position (index in the sequence, the context counted) falls in it, over every sequence;
    and the cumulative perplexity and accuracy up to the bin's end (the curves of the KNorm code)."""
    if bin_size < 1:
        raise ValueError(f"bin_size must be a positive number of positions; got {bin_size}.")
    nll = torch.cat([s.token_nll for s in scored])  # (sequences, continuation)
    correct = torch.cat([s.token_correct for s in scored]).float()
    positions = context_length + torch.arange(nll.shape[-1])
    rows, total_nll, total_correct, total = [], 0.0, 0.0, 0
    for start in range(int(positions[0]) // bin_size * bin_size, int(positions[-1]) + 1, bin_size):
        inside = (positions >= start) & (positions < start + bin_size)
        count = int(inside.sum()) * nll.shape[0]  # bins tile the contiguous positions: never empty
        bin_nll, bin_correct = float(nll[:, inside].sum()), float(correct[:, inside].sum())
        total_nll, total_correct, total = total_nll + bin_nll, total_correct + bin_correct, total + count
        rows.append({"position_bin": start, "position_end": start + bin_size, "n_tokens": count,
                     "nll": bin_nll / count, "perplexity": math.exp(bin_nll / count), "accuracy": bin_correct / count,
                     "cumulative_perplexity": math.exp(total_nll / total),
                     "cumulative_accuracy": total_correct / total})
    return rows


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
    return scored_tokens(torch.cat([first, rest], dim=1), continuation, stats)


class LanguageModelingTask(PerplexityTask):
    """`n_sequences` sequences of context_length + continuation_length tokens; `source` says where
    the text file comes from (named in the error when it is missing)."""

    def __init__(self, context_length: int, continuation_length: int, n_sequences: int, name: str = "lm",
                 text_path: str | Path | None = None, seed: int = 0, source: str = "") -> None:
        self.name, self.context_length, self.continuation_length = name, context_length, continuation_length
        self.n_sequences, self.text_path, self.seed, self.source = n_sequences, text_path, seed, source

    def sequences(self, tokenizer: Any) -> list[Tensor]:
        length = self.context_length + self.continuation_length
        if self.text_path is None:
            generator = torch.Generator().manual_seed(self.seed)
            return [torch.randint(0, len(tokenizer), (1, length), generator=generator) for _ in range(self.n_sequences)]
        path = Path(self.text_path)
        origin = self.source or "e.g. Wikipedia or Pile documents joined"
        if not path.is_file():
            raise DataNotFoundError(f"{path} not found: put the evaluation text there as one plain-text file "
                                    f"({origin}), or set text_path=null for random ids")
        ids = tokenizer(path.read_text(encoding="utf-8"), add_special_tokens=False, return_tensors="pt").input_ids
        if ids.shape[1] < length * self.n_sequences:
            raise DataNotFoundError(f"{path} holds {ids.shape[1]} tokens, fewer than {self.n_sequences} sequences of "
                                    f"{length}: add text ({origin}) or lower n_sequences")
        return [ids[:, i * length:(i + 1) * length] for i in range(self.n_sequences)]

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

Scoring never holds the logits of a long continuation: the continuation pass stops at the decoder's
final hidden states, and the LM head turns them into logits `SCORE_SLICE` positions at a time, each
slice scored (cross-entropy and argmax per token) and dropped; only the per-token NLL and correctness
are kept (for Llama-3's 128k vocabulary, 10 x 8191 logits are ~21 GB in bf16, ~40 GB in float32).

Token sources: seeded random ids (spec F.a, smoke) or consecutive chunks of a plain-text file, of
which only the beginning that the sequences need is read and tokenized (`leading_tokens`). With
`bos=True` each sequence is the tokenizer's BOS followed by length - 1 tokens, as text fed through
the tokenizer starts: the BOS sink KNorm's argument rests on (thesis 4.1) is then at position 0.
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

from thesis.core.errors import ConfigError, DataNotFoundError
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


SCORE_SLICE = 1024


def token_scores(logits: Tensor, targets: Tensor, slice_length: int = SCORE_SLICE) -> tuple[Tensor, Tensor]:
    """Per token (batch, T) the float32 NLL and whether the argmax was the target, for logits
    (batch, T, vocab) predicting targets (batch, T); computed `slice_length` positions at a time so
    that no float32 copy of all the logits is made."""
    nll, correct = [], []
    for start in range(0, targets.shape[1], slice_length):
        part = logits[:, start:start + slice_length].float()
        target = targets[:, start:start + slice_length]
        nll.append(F.cross_entropy(part.transpose(1, 2), target, reduction="none"))
        correct.append(part.argmax(dim=-1) == target)
    return torch.cat(nll, dim=1), torch.cat(correct, dim=1)


def scored_tokens(token_nll: Tensor, token_correct: Tensor, stats: CacheStats) -> Scored:
    """Scored from per-token NLL and correctness (batch, T)."""
    return Scored(float(token_nll.sum()), token_nll.numel(), stats, token_nll.cpu(), token_correct.cpu())


def totals(scored: list[Scored]) -> dict[str, float]:
    """NLL per token, perplexity and next-token accuracy over every token of `scored`."""
    n_tokens = sum(s.n_tokens for s in scored)
    nll = sum(s.nll_sum for s in scored) / n_tokens
    accuracy = sum(int(s.token_correct.sum()) for s in scored) / n_tokens
    return {"nll": nll, "perplexity": math.exp(nll), "accuracy": accuracy}


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


def head_logits(model: nn.Module, hidden: Tensor) -> Tensor:
    """The causal LM's logits for final hidden states (its LM head, and the final soft-capping of the
    models that have one)."""
    logits = model.lm_head(hidden)
    cap = getattr(model.config, "final_logit_softcapping", None)
    return cap * torch.tanh(logits / cap) if cap else logits


def sliced_scores(model: nn.Module, hidden: Tensor, targets: Tensor, slice_length: int = SCORE_SLICE
                  ) -> tuple[Tensor, Tensor]:
    """`token_scores` of the logits of final hidden states (batch, T, hidden), formed `slice_length`
    positions at a time so that only one slice of logits exists at once."""
    nll, correct = [], []
    for start in range(0, targets.shape[1], slice_length):
        logits = head_logits(model, hidden[:, start:start + slice_length])
        part_nll, part_correct = token_scores(logits, targets[:, start:start + slice_length], slice_length)
        nll.append(part_nll)
        correct.append(part_correct)
    return torch.cat(nll, dim=1), torch.cat(correct, dim=1)


@torch.no_grad()
def compressed_nll(model: nn.Module, input_ids: Tensor, context_length: int, press: PressBase | None,
                   slice_length: int = SCORE_SLICE) -> Scored:
    """Summed negative log-likelihood of input_ids[:, context_length:] given the compressed context;
    the continuation's logits are formed and scored `slice_length` positions at a time."""
    if not 0 < context_length < input_ids.shape[1]:
        raise ValueError(f"context_length must leave a continuation: 0 < {context_length} < {input_ids.shape[1]}.")
    cache = DynamicCache(config=model.config)
    context, continuation = input_ids[:, :context_length], input_ids[:, context_length:]
    with press(model) if press is not None else nullcontext():
        first = model(input_ids=context, **with_cache(model, cache), logits_to_keep=1).logits
        stats = cache_stats(model, cache, input_ids.shape[0], context_length)
        first_nll, first_correct = token_scores(first, continuation[:, :1])
        if continuation.shape[1] == 1:
            return scored_tokens(first_nll, first_correct, stats)
        hidden = model.model(input_ids=continuation[:, :-1], **with_cache(model, cache)).last_hidden_state
    rest_nll, rest_correct = sliced_scores(model, hidden, continuation[:, 1:], slice_length)
    token_nll, token_correct = torch.cat([first_nll, rest_nll], dim=1), torch.cat([first_correct, rest_correct], dim=1)
    return scored_tokens(token_nll, token_correct, stats)


def leading_tokens(tokenizer: Any, path: Path, count: int, chars_per_token: float = 4.0,
                   margin: int = 256) -> list[int]:
    """The first `count` ids of the text file at `path` tokenized whole without special tokens (all of
    them when it holds fewer), reading only the beginning the ids need. A prefix of about
    `chars_per_token` characters per id is tokenized and doubled until it yields `margin` ids more than
    `count` or the file ends: cutting the text changes only the last ids of the prefix (those of the
    pre-token cut), never the earlier ones, which are the whole file's."""
    text, wanted = "", max(1, int(chars_per_token * (count + margin)))
    with path.open(encoding="utf-8") as file:
        while True:
            block = file.read(wanted - len(text))
            text += block
            ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
            if len(text) < wanted or len(ids) >= count + margin:
                return ids[:count]
            wanted *= 2


class LanguageModelingTask(PerplexityTask):
    """`n_sequences` sequences of context_length + continuation_length tokens; `source` says where
    the text file comes from (named in the error when it is missing); with `bos`, each sequence is
    BOS followed by length - 1 tokens (random ids or consecutive text)."""

    def __init__(self, context_length: int, continuation_length: int, n_sequences: int, name: str = "lm",
                 text_path: str | Path | None = None, seed: int = 0, source: str = "", bos: bool = False) -> None:
        self.name, self.context_length, self.continuation_length = name, context_length, continuation_length
        self.n_sequences, self.text_path, self.seed, self.source = n_sequences, text_path, seed, source
        self.bos = bos

    def sequences(self, tokenizer: Any) -> list[Tensor]:
        length = self.context_length + self.continuation_length
        body = length - 1 if self.bos else length
        if self.bos and tokenizer.bos_token_id is None:
            raise ConfigError(f"data task {self.name} sets bos=true but the tokenizer has no BOS token: "
                              "set bos=false or use the model's own tokenizer")
        if self.text_path is None:
            generator = torch.Generator().manual_seed(self.seed)
            bodies = [torch.randint(0, len(tokenizer), (1, body), generator=generator) for _ in range(self.n_sequences)]
        else:
            ids = torch.tensor(self.text_tokens(tokenizer, body * self.n_sequences)).view(1, -1)
            bodies = [ids[:, i * body:(i + 1) * body] for i in range(self.n_sequences)]
        if not self.bos:
            return bodies
        return [torch.cat([torch.full((1, 1), tokenizer.bos_token_id), ids], dim=1) for ids in bodies]

    def text_tokens(self, tokenizer: Any, count: int) -> list[int]:
        """The first `count` tokens of the text file."""
        path = Path(self.text_path)
        origin = self.source or "e.g. Wikipedia or Pile documents joined"
        if not path.is_file():
            raise DataNotFoundError(f"{path} not found: put the evaluation text there as one plain-text file "
                                    f"({origin}), or set text_path=null for random ids")
        ids = leading_tokens(tokenizer, path, count)
        if len(ids) < count:
            raise DataNotFoundError(f"{path} holds {len(ids)} tokens, fewer than the {count} of {self.n_sequences} "
                                    f"sequences of {self.context_length + self.continuation_length}: add text "
                                    f"({origin}) or lower n_sequences")
        return ids

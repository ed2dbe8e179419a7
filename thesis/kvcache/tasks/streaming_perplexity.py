"""Streaming perplexity (thesis 4.1 and 4.2 LM; spec A.1 "streaming LM protocol", B.2 (i)): a text is
read token by token while the cache is held at a budget, and every next token is scored.

The first `context_length` tokens are prefilled in one call (1 reads the whole text token by token, as
the KNorm and Q-Filters streaming scripts do); every later token is fed alone, under the press, and the
logits it produces score the token after it. With `DecodingPress(press, compression_interval=1,
target_size=B)` each layer is brought back to B pairs after every token, so a token attends to at most
B + 1 pairs (the Q-Filters streaming cache compresses before attending, i.e. B). KNorm's script instead
lets the cache reach a length P and then keeps ceil(0.98 n) pairs (`knorm.PruneAfterPress`). Without a
press this is the model's plain perplexity, computed one token at a time. Achieved ratio and bytes are
measured on the final cache, against every token it has seen (spec 0, "n x" of 4.3 decoding).

The sequences are those of `LanguageModelingTask` (random ids or chunks of one text file), of
context_length + continuation_length tokens; the continuation is scored, and every scored token keeps
its NLL and next-token correctness (the curves along the position of Figs. 4.3, 4.6, 4.10-4.13). Each
step's (batch, vocab) logits are scored as soon as they are produced, so only (batch, T) NLL and
correctness are held, never the logits of the whole continuation.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import Tensor, nn
from transformers import DynamicCache

from thesis.core.models import with_cache
from thesis.kvcache.press import PressBase
from thesis.kvcache.tasks.cache_stats import cache_stats
from thesis.kvcache.tasks.perplexity import LanguageModelingTask, Scored, scored_tokens, token_scores


@torch.no_grad()
def streaming_nll(model: nn.Module, input_ids: Tensor, context_length: int, press: PressBase | None) -> Scored:
    """Summed negative log-likelihood of input_ids[:, context_length:], read one token at a time."""
    if not 0 < context_length < input_ids.shape[1]:
        raise ValueError(f"context_length must leave a continuation: 0 < {context_length} < {input_ids.shape[1]}.")
    cache = DynamicCache(config=model.config)
    targets = input_ids[:, context_length:].split(1, dim=1)
    with press(model) if press is not None else nullcontext():
        logits = model(input_ids=input_ids[:, :context_length], **with_cache(model, cache), logits_to_keep=1).logits
        scores = [token_scores(logits, targets[0])]
        for token, target in zip(input_ids[:, context_length:-1].split(1, dim=1), targets[1:]):
            scores.append(token_scores(model(input_ids=token, **with_cache(model, cache)).logits, target))
    stats = cache_stats(model, cache, input_ids.shape[0], input_ids.shape[1] - 1)
    nll, correct = zip(*scores)
    return scored_tokens(torch.cat(nll, dim=1), torch.cat(correct, dim=1), stats)


class StreamingLanguageModelingTask(LanguageModelingTask):
    """`LanguageModelingTask`'s sequences, scored by `streaming_nll`."""

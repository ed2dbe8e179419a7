"""Greedy decoding on a cache, the loop the generation tasks, the decoding runner and the miniature's
retrieval share; each caller keeps its own stopping rule.

`greedy_tokens` yields the argmax of the given logits, and feeds that token through the cache only
when the caller asks for the next one: a caller that stops (end of sequence, token budget) never pays
for a forward pass whose logits it would not read. Stopping is left to the caller because the three
differ: a generation task drops the end-of-sequence token, the decoding runner keeps its stop token,
the miniature decodes a fixed number of bytes for a whole batch.
"""

from __future__ import annotations

from collections.abc import Iterator

from torch import Tensor, nn
from transformers.cache_utils import Cache

from thesis.core.models import with_cache


def last_logits(model: nn.Module, input_ids: Tensor, cache: Cache) -> Tensor:
    """(batch, vocab) logits at the last position after feeding `input_ids` through `cache`."""
    return model(input_ids=input_ids, **with_cache(model, cache), logits_to_keep=1).logits[:, -1]


def greedy_tokens(model: nn.Module, cache: Cache, logits: Tensor) -> Iterator[Tensor]:
    """(batch, 1) greedy tokens, the first from `logits`, each fed back through `cache` on demand."""
    while True:
        token = logits.argmax(-1, keepdim=True)
        yield token
        logits = last_logits(model, token, cache)

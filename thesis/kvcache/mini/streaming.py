"""M2 of the miniature (spec F.b; thesis Figs. 4.3, 4.31a, 4.35): language modelling with a cache held at
a budget, every chunk read token by token, all chunks in one batch (same length, same budget).

Per-token losses are kept (not only their sum, as `tasks.streaming_perplexity.streaming_nll` returns)
because the claims need perplexity over positions beyond the budget, next-token accuracy and a paired
bootstrap over chunks. The uncompressed reference is one causal forward, which equals reading token
by token with a full cache.

Settings (`streaming_press`):
- protocol "knorm" (the KNorm authors' script, spec A.1): prune once a layer holds `prune_after`
  pairs back to ceil(keep_ratio * prune_after), i.e. `DecodingPress(target=ceil(k P), interval=P - target)`;
- protocol "budget": the cache is brought back to `budget` pairs after every `interval` new tokens,
  the last `window` positions protected (`RecentWindowPress`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import DynamicCache

from thesis.core.models import with_cache
from thesis.kvcache.decoding import DecodingPress
from thesis.kvcache.press import Press
from thesis.kvcache.mini.presses import RecentWindowPress


def streaming_press(press: Press, protocol: str, budget: int = 0, window: int = 0, interval: int = 1,
                    prune_after: int = 0, keep_ratio: float = 1.0, buffer: int = 128) -> DecodingPress:
    if protocol == "knorm":
        target = math.ceil(keep_ratio * prune_after - 1e-9)
        return DecodingPress(press, compression_interval=max(1, prune_after - target), target_size=target,
                             hidden_states_buffer_size=buffer)
    if protocol == "budget":
        inner = RecentWindowPress(press=press, window=window) if window else press
        return DecodingPress(inner, compression_interval=interval, target_size=budget, hidden_states_buffer_size=buffer)
    raise ValueError(f"protocol must be 'knorm' or 'budget'; got {protocol!r}")


@torch.no_grad()
def token_losses(model: nn.Module, ids: Tensor, press: DecodingPress | None) -> tuple[Tensor, Tensor]:
    """(nll, correct), each (batch, n - 1): the loss and argmax hit of every next token."""
    ids = ids.to(model.device)
    if press is None:
        logits = model(input_ids=ids).logits[:, :-1]
    else:
        cache = DynamicCache(config=model.config)
        steps = []
        with press(model):
            for token in ids[:, :-1].split(1, dim=1):
                steps.append(model(input_ids=token, **with_cache(model, cache)).logits)
        logits = torch.cat(steps, dim=1)
    targets = ids[:, 1:]
    nll = F.cross_entropy(logits.float().transpose(1, 2), targets, reduction="none")
    return nll.cpu(), (logits.argmax(-1) == targets).cpu()

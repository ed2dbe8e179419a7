"""What the kvpress parity test needs to look inside a press run: the tensors kvpress's scorer saw,
and which positions a compressed cache kept.

Recording wraps a press instance's `score`, so every layer's call during kvpress's own forward hooks
is kept with its inputs, and the repository's scorer can be fed exactly the same tensors. Kept
positions are read back from a compressed cache by matching its key rows against the uncompressed
cache of the same input: in prefill a layer's keys do not depend on any eviction, so every kept key
is an exact copy of one row there. This works whatever order the pairs are stored in (kvpress keeps
them in score order, the repository in positional order; spec E.3).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor, nn
from transformers import DynamicCache

from thesis.core.models import with_cache


@dataclass
class ScoreCall:
    """One call of a scorer: its inputs and the scores it returned."""

    module: nn.Module
    hidden_states: Tensor
    keys: Tensor
    values: Tensor
    attentions: Tensor | None
    kwargs: dict[str, Any]
    scores: Tensor


def record_scores(press: Any) -> list[ScoreCall]:
    """Wrap `press.score` (on this instance only); the returned list fills as the press runs."""
    calls: list[ScoreCall] = []
    score = press.score

    def recorded(module, hidden_states, keys, values, attentions, kwargs):
        scores = score(module, hidden_states, keys, values, attentions, kwargs)
        calls.append(ScoreCall(module, hidden_states.clone(), keys.clone(), values.clone(),
                               None if attentions is None else attentions.clone(), dict(kwargs), scores.clone()))
        return scores

    press.score = recorded
    return calls


@torch.no_grad()
def prefill(model: nn.Module, press: Callable[[nn.Module], AbstractContextManager] | None,
            input_ids: Tensor) -> DynamicCache:
    """The cache after prefilling `input_ids` through the decoder (no LM head, as kvpress's pipeline
    does) with `press` active, or without a press when it is None."""
    cache = DynamicCache()
    if press is None:
        model.model(input_ids=input_ids, **with_cache(model.model, cache))
    else:
        with press(model):
            model.model(input_ids=input_ids, **with_cache(model.model, cache))
    return cache


def row_positions(reference: Tensor, rows: Tensor, tolerance: float = 1e-6) -> Tensor:
    """Index in `reference` (n, d) of each row of `rows` (k, d); every row must be found there."""
    distances = torch.cdist(rows.double(), reference.double())
    nearest = distances.min(dim=-1)
    if bool((nearest.values > tolerance).any()):
        distance = float(nearest.values.max())
        raise AssertionError(f"a kept key is no row of the uncompressed cache (distance {distance:.2e})")
    return nearest.indices


def kept_mask(reference_keys: Tensor, kept_keys: Tensor) -> Tensor:
    """(batch, kv_heads, n) bool: which positions of `reference_keys` (batch, kv_heads, n, d) the
    compressed keys (batch, kv_heads, k, d) hold, in any order."""
    mask = torch.zeros(reference_keys.shape[:3], dtype=torch.bool)
    for b in range(reference_keys.shape[0]):
        for h in range(reference_keys.shape[1]):
            mask[b, h, row_positions(reference_keys[b, h], kept_keys[b, h])] = True
    return mask


def headwise_kept_mask(reference_keys: Tensor, layer: Any) -> Tensor:
    """`kept_mask` for a head-wise layer: `keys` (entries, d) packed per (batch, head), `lengths`
    (batch, kv_heads) entries each."""
    mask = torch.zeros(reference_keys.shape[:3], dtype=torch.bool)
    chunks = layer.keys.split(layer.lengths.flatten().tolist())
    for index, chunk in enumerate(chunks):
        b, h = divmod(index, reference_keys.shape[1])
        mask[b, h, row_positions(reference_keys[b, h], chunk)] = True
    return mask


def kept_masks(reference: DynamicCache, compressed: DynamicCache) -> list[Tensor]:
    """`kept_mask` of every layer of a compressed cache against the uncompressed one."""
    return [kept_mask(full.keys, layer.keys) for full, layer in zip(reference.layers, compressed.layers)]

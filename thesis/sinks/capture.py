"""Per-step sink statistics and sink masking inside any model's attention, without keeping maps.

`SinkCapture` is a context manager that temporarily replaces
`torch.nn.functional.scaled_dot_product_attention`, through which transformers' `sdpa` attention
(Llama and Llama-style bidirectional models) and most hand-written attention modules route. Each
call is one layer of the current forward pass (layers are numbered by call order after
`begin_step`). The replacement

1. recomputes the attention probabilities explicitly, reduces them at once to the top-k key scores
   per head (thesis Eq. 5.16 flags, the number of sinks) and drops the map, so what is kept grows
   as steps x layers x heads x k, never with S x S;
2. computes the output with the original function: with `topk = 0` a captured forward is bitwise the
   uncaptured one; with `topk > 0` the top-k keys of each head, ranked by the same call's scores,
   get -inf logits for every query but their own position (spec B.4), so the other keys' weights
   renormalise and the masked keys receive zero attention.
"""

from __future__ import annotations

import math
from contextlib import ContextDecorator
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from thesis.core.errors import ConfigError
from thesis.sinks.detection import Score, check_score, is_sink, key_scores


@dataclass(frozen=True)
class LayerStats:
    """One attention call of one denoising step; tensors are (batch, heads, k) unless noted."""

    step: int
    layer: int
    positions: torch.Tensor  # top-k keys by score, best first
    scores: torch.Tensor
    sink: torch.Tensor  # Eq. 5.16 flag of each top-k key
    n_sinks: torch.Tensor  # (batch, heads): all keys passing Eq. 5.16
    masked: torch.Tensor  # (batch, heads, topk) key positions whose attention was masked

    def numel(self) -> int:
        return sum(t.numel() for t in (self.positions, self.scores, self.sink, self.n_sinks, self.masked))


def explicit_attention(query: torch.Tensor, key: torch.Tensor, attn_mask: torch.Tensor | None = None,
                       is_causal: bool = False, scale: float | None = None) -> torch.Tensor:
    """softmax(q k^T / sqrt(d) + mask) in float32, as SDPA defines it: (B, H, Sq, Sk)."""
    if key.shape[1] != query.shape[1]:  # grouped-query attention: share each key head
        key = key.repeat_interleave(query.shape[1] // key.shape[1], dim=1)
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    logits = (query.float() @ key.float().transpose(-1, -2)) * scale
    return torch.softmax(logits + additive_mask(attn_mask, is_causal, logits), dim=-1)


def additive_mask(attn_mask: torch.Tensor | None, is_causal: bool, logits: torch.Tensor) -> torch.Tensor:
    """SDPA's mask conventions (boolean: True attends; float: added) as a float mask for `logits`."""
    n_queries, n_keys = logits.shape[-2:]
    mask = torch.zeros((n_queries, n_keys), dtype=logits.dtype, device=logits.device)
    if is_causal:
        causal = torch.ones(n_queries, n_keys, dtype=torch.bool, device=logits.device).tril()
        mask = mask.masked_fill(~causal, -math.inf)
    if attn_mask is None:
        return mask
    if attn_mask.dtype == torch.bool:
        return mask.masked_fill(~attn_mask, -math.inf)
    return mask + attn_mask.to(logits.dtype)


def sink_column_mask(positions: torch.Tensor, n_queries: int, n_keys: int) -> torch.Tensor:
    """Boolean SDPA mask (B, H, Sq, Sk), False on the key columns `positions` (B, H, K) for every
    query except the one at the same position (a row is never left empty); -1 masks nothing."""
    batch, heads, _ = positions.shape
    columns = torch.zeros(batch, heads, n_keys + 1, dtype=torch.bool, device=positions.device)
    columns.scatter_(-1, positions.where(positions >= 0, n_keys), True)  # -1 goes to a spare column
    blocked = columns[:, :, None, :n_keys].expand(batch, heads, n_queries, n_keys).clone()
    offset = n_keys - n_queries  # queries are the last Sq positions
    rows = torch.arange(n_queries, device=positions.device)
    blocked[:, :, rows, rows + offset] = False
    return ~blocked


def combine_masks(attn_mask: torch.Tensor | None, is_causal: bool, keep: torch.Tensor,
                  dtype: torch.dtype) -> torch.Tensor:
    """The model's own mask (boolean or float, or causal) intersected with the boolean `keep`."""
    if attn_mask is not None and attn_mask.dtype != torch.bool:
        return torch.where(keep, attn_mask.to(dtype), -math.inf)
    if is_causal:
        n_queries, n_keys = keep.shape[-2:]
        keep = keep & torch.ones(n_queries, n_keys, dtype=torch.bool, device=keep.device).tril()
    return keep if attn_mask is None else keep & attn_mask


class SdpaInterceptor(ContextDecorator):
    """Replaces `F.scaled_dot_product_attention` with `self._attention` while active. Each call is one
    layer of the current forward pass: `begin_step` resets the layer count, `_attention` advances it."""

    _step: int = 0
    _layer: int = 0
    _original: Callable | None = None

    def begin_step(self, step: int) -> None:
        """Call before each forward pass: the next attention call is layer 0 of `step`."""
        self._step, self._layer = step, 0

    def __enter__(self):
        if self._original is not None:
            raise ConfigError(f"{type(self).__name__} is already active: do not nest it")
        self._original = F.scaled_dot_product_attention
        torch.nn.functional.scaled_dot_product_attention = self._attention
        return self

    def __exit__(self, *exc: object) -> None:
        torch.nn.functional.scaled_dot_product_attention = self._original
        self._original = None


@dataclass
class SinkCapture(SdpaInterceptor):
    """Capture the top-`keep` key scores per (step, layer, head) and mask the top-`topk` keys.

    `require_eps`: mask only top-`topk` keys that also pass Eq. 5.16 (the rest stay unmasked; the
    masked positions are then -1 in `LayerStats.masked`).
    """

    keep: int = 10
    topk: int = 0
    eps: float = 3.0
    score: Score = "colsum"
    require_eps: bool = False
    records: list[LayerStats] = field(default_factory=list)
    #: called as on_scores(step, layer, scores (batch, heads, keys)) before the scores are dropped
    on_scores: Callable[[int, int, torch.Tensor], None] | None = None

    def __post_init__(self) -> None:
        check_score(self.score)
        if self.keep < 1 or not 0 <= self.topk <= self.keep:
            raise ConfigError(f"sink capture needs keep >= 1 and 0 <= topk <= keep (masked keys are among the kept "
                              f"ones), got keep={self.keep}, topk={self.topk}: raise keep")

    def _attention(self, query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                   enable_gqa=False):
        with torch.no_grad():
            scores = key_scores(explicit_attention(query, key, attn_mask, is_causal, scale), self.score)
        if self.on_scores is not None:
            self.on_scores(self._step, self._layer, scores)
        k = min(self.keep, scores.shape[-1])
        top_scores, top_positions = scores.topk(k, dim=-1)
        flags = is_sink(scores, self.eps)
        masked = top_positions[..., : self.topk]
        if self.require_eps:
            masked = torch.where(flags.gather(-1, masked), masked, -1)
        self.records.append(LayerStats(self._step, self._layer, top_positions, top_scores, flags.gather(-1, top_positions),
                                       flags.sum(-1), masked))
        self._layer += 1
        if self.topk > 0:
            n_queries, n_keys = query.shape[-2], key.shape[-2]
            keep = sink_column_mask(masked, n_queries, n_keys)
            attn_mask, is_causal = combine_masks(attn_mask, is_causal, keep, query.dtype), False
        return self._original(query, key, value, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal,
                              scale=scale, enable_gqa=enable_gqa)

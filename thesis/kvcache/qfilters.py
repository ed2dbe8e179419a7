"""Q-Filters (thesis Sec. 4.2, spec B.1): score keys by their projection on each head's dominant query
direction, found once per model offline.

Calibration: run text through the model, collect every layer's post-RoPE queries (the cached keys
are post-RoPE too; spec E.6), sample up to `num_samples` of them per query head, take the SVD
Q = U S V^T and the top right singular vector v_1, oriented so queries project positively on it:
thesis v_1^+ = sgn(1 u_1^T) v_1 (`sign_rule="sum"`), or the authors' code's majority vote over the
entries of u_1 (`sign_rule="majority"`) (spec E.5). The filters of the query heads sharing a KV
head are averaged, not renormalised (GQA), giving a (layers, kv_heads, head_dim) tensor.

Scoring: keep the keys with the highest <k, v_1^+> (Proposition 4.2.1: the expected query-key
product is about kappa <k, u> with kappa > 0). Files hold v_1^+ itself under the name `q_filters`
(safetensors, metadata `orientation=positive`); the authors' published filters hold -v_1^+ and are
read with `load_q_filters(path, stored_negated=True)`. No recent window is protected, as in kvpress's
prefill press (the authors' streaming cache protects one; the thesis does not mention it, spec E.7).
Every layer is compressed by default (kvpress); `skip_layers=(0, 1)` leaves the first two whole, as the
Q-Filters paper's needle-in-a-haystack comparison with K-norm does (Fig. 4.36).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from thesis.kvcache.press import Press, decoder
from thesis.kvcache.queries import group_mean, post_rope_queries

FILTERS_KEY = "q_filters"


def dominant_direction(queries: Tensor, sign_rule: Literal["sum", "majority"] = "sum") -> Tensor:
    """Unit v_1^+ (d,) of queries (N, d): top right singular vector, oriented by `sign_rule`."""
    left, _, right = torch.linalg.svd(queries.float(), full_matrices=False)
    first = left[:, 0]
    if sign_rule == "sum":
        positive = bool(first.sum() > 0)
    elif sign_rule == "majority":
        positive = int((first > 0).sum()) > first.numel() / 2
    else:
        raise ValueError(f"sign_rule must be 'sum' (thesis) or 'majority' (authors' code); got {sign_rule!r}.")
    return right[0] if positive else -right[0]


@torch.no_grad()
def calibrate_q_filters(model: nn.Module, batches: Iterable[Tensor], num_samples: int = 3000,
                        sign_rule: Literal["sum", "majority"] = "sum", seed: int = 0) -> Tensor:
    """Q-Filters (layers, kv_heads, head_dim) of `model` from token batches (batch, seq)."""
    stack = decoder(model)
    collected: list[list[Tensor]] = [[] for _ in stack.layers]

    def collect(module, args, kwargs, output):
        queries = post_rope_queries(module, kwargs["hidden_states"], kwargs["position_embeddings"])
        collected[module.layer_idx].append(queries.transpose(0, 1).flatten(1, 2).float().cpu())

    handles = [layer.self_attn.register_forward_hook(collect, with_kwargs=True) for layer in stack.layers]
    try:
        for input_ids in batches:
            model(input_ids=input_ids.to(model.device), use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    generator = torch.Generator().manual_seed(seed)
    filters = []
    for layer_queries, layer in zip(collected, stack.layers):
        queries = torch.cat(layer_queries, dim=1)  # (heads, N, head_dim)
        rows = torch.randperm(queries.shape[1], generator=generator)[:num_samples]
        heads = torch.stack([dominant_direction(head[rows], sign_rule) for head in queries])
        filters.append(group_mean(heads[None], layer.self_attn.num_key_value_groups)[0])
    return torch.stack(filters)


def save_q_filters(filters: Tensor, path: str | Path) -> None:
    """Write v_1^+ filters (layers, kv_heads, head_dim) to a safetensors file."""
    save_file({FILTERS_KEY: filters.contiguous().cpu()}, str(path), metadata={"orientation": "positive"})


def load_q_filters(path: str | Path, stored_negated: bool = False) -> Tensor:
    """Read filters as v_1^+; `stored_negated` for files holding -v_1^+ (the authors' convention)."""
    filters = load_file(str(path))[FILTERS_KEY]
    return -filters if stored_negated else filters


@dataclass
class QFiltersPress(Press):
    """Evict the keys with the lowest projection on the layer's filter, per KV head."""

    filters: Tensor | None = field(default=None, repr=False)
    skip_layers: tuple[int, ...] = ()

    def compresses_layer(self, layer_idx: int) -> bool:
        return layer_idx not in self.skip_layers

    def attach(self, model: nn.Module) -> None:
        config = model.config
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        expected = (config.num_hidden_layers, config.num_key_value_heads, head_dim)
        if self.filters is None or tuple(self.filters.shape) != expected:
            got = None if self.filters is None else tuple(self.filters.shape)
            raise ValueError(f"QFiltersPress needs filters of shape {expected} for this model; got {got}. "
                             "Compute them with calibrate_q_filters.")

    def score(self, module: nn.Module, hidden_states: Tensor, keys: Tensor, values: Tensor,
              attentions: Tensor | None, kwargs: dict[str, Any]) -> Tensor:
        layer_filters = self.filters[module.layer_idx].to(keys.device, torch.float32)
        return torch.einsum("bhnd,hd->bhn", keys.float(), layer_filters)

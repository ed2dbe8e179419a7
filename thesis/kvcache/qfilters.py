"""Q-Filters (thesis Sec. 4.2, spec B.1): score keys by their projection on each head's dominant query
direction, found once per model offline.

Calibration: run text through the model and keep the post-RoPE queries (the cached keys are
post-RoPE too; spec E.6) of a uniform sample of at most `num_samples` token positions, the same
positions for every layer and head; take the SVD Q = U S V^T per query head and the top right
singular vector v_1, oriented so queries project positively on it: thesis v_1^+ = sgn(1 u_1^T) v_1
(`sign_rule="sum"`), or the authors' code's majority vote over the entries of u_1
(`sign_rule="majority"`) (spec E.5). The filters of the query heads sharing a KV head are averaged,
not renormalised (GQA), giving a (layers, kv_heads, head_dim) tensor.

Sampling (`sample_queries`): the token positions of all batches are numbered in order (batch-major
inside a batch) and position t gets the key r_t, the t-th float64 draw of a CPU generator seeded
with `seed`. The sample is the `num_samples` positions with the smallest keys, rows ordered by
increasing key. Draws are sequential, so the sample depends on the token stream only, not on how it
is cut into batches, and a sample of n is the first n rows of any larger one (nested prefixes, used
by the calibration ablation). Each batch's surviving rows are picked on the model's device; only
they are moved to the CPU, so host memory holds layers x heads x num_samples x head_dim floats.

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


def oriented(first_left: Tensor, first_right: Tensor, sign_rule: Literal["sum", "majority"] = "sum") -> Tensor:
    """v_1^+ from the first left (N,) and right (d,) singular vectors: v_1 or -v_1 by `sign_rule`."""
    if sign_rule == "sum":
        positive = bool(first_left.sum() > 0)
    elif sign_rule == "majority":
        positive = int((first_left > 0).sum()) > first_left.numel() / 2
    else:
        raise ValueError(f"sign_rule must be 'sum' (thesis) or 'majority' (authors' code); got {sign_rule!r}.")
    return first_right if positive else -first_right


def dominant_direction(queries: Tensor, sign_rule: Literal["sum", "majority"] = "sum") -> Tensor:
    """Unit v_1^+ (d,) of queries (N, d): top right singular vector, oriented by `sign_rule`."""
    left, _, right = torch.linalg.svd(queries.float(), full_matrices=False)
    return oriented(left[:, 0], right[0], sign_rule)


@dataclass
class QuerySample:
    """Post-RoPE queries at the sampled token positions, rows in increasing key order (module docstring)."""

    queries: list[Tensor]  # per layer, (heads, n, head_dim) float32 on the CPU
    positions: Tensor  # (n,) index of each row in the token stream of the batches


@torch.no_grad()
def sample_queries(model: nn.Module, batches: Iterable[Tensor], num_samples: int, seed: int = 0) -> QuerySample:
    """The post-RoPE queries of every layer and head at min(num_samples, tokens) sampled positions."""
    if num_samples < 1:
        raise ValueError(f"num_samples must be at least 1; got {num_samples}.")
    stack = decoder(model)
    generator = torch.Generator().manual_seed(seed)
    kept: list[Tensor | None] = [None] * len(stack.layers)
    step: dict[str, Tensor] = {}

    def collect(module, args, kwargs, output):
        queries = post_rope_queries(module, kwargs["hidden_states"], kwargs["position_embeddings"])
        seq = queries.shape[2]
        rows = step["new_rows"].to(queries.device)
        new = queries[rows // seq, :, rows % seq].transpose(0, 1).float().cpu()  # (heads, new, head_dim)
        old = kept[module.layer_idx]
        kept[module.layer_idx] = (new if old is None else torch.cat([old, new], dim=1))[:, step["source"]]

    keys = torch.empty(0, dtype=torch.float64)
    positions = torch.empty(0, dtype=torch.long)
    seen = 0
    handles = [layer.self_attn.register_forward_hook(collect, with_kwargs=True) for layer in stack.layers]
    try:
        for input_ids in batches:
            count = input_ids.numel()
            candidates = torch.cat([keys, torch.rand(count, generator=generator, dtype=torch.float64)])
            order = candidates.argsort(stable=True)[:num_samples]
            is_new = order >= len(keys)
            source = order.clone()
            source[is_new] = len(keys) + torch.arange(int(is_new.sum()))
            step["new_rows"] = order[is_new] - len(keys)
            step["source"] = source
            keys = candidates[order]
            positions = torch.cat([positions, seen + torch.arange(count)])[order]
            seen += count
            model(input_ids=input_ids.to(model.device), use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    if seen == 0:
        raise ValueError("Q-Filters calibration got no batches of tokens; give at least one (batch, seq) tensor.")
    return QuerySample(queries=list(kept), positions=positions)


def filters_from_queries(queries: list[Tensor], groups: int, sign_rule: Literal["sum", "majority"] = "sum") -> Tensor:
    """Q-Filters (layers, kv_heads, head_dim) from per-layer queries (heads, N, head_dim); `groups` query
    heads share a KV head."""
    filters = []
    for layer_queries in queries:
        heads = torch.stack([dominant_direction(head, sign_rule) for head in layer_queries])
        filters.append(group_mean(heads[None], groups)[0])
    return torch.stack(filters)


def query_groups(model: nn.Module) -> int:
    """Number of query heads sharing each KV head."""
    return decoder(model).layers[0].self_attn.num_key_value_groups


def calibrate_q_filters(model: nn.Module, batches: Iterable[Tensor], num_samples: int = 3000,
                        sign_rule: Literal["sum", "majority"] = "sum", seed: int = 0) -> Tensor:
    """Q-Filters (layers, kv_heads, head_dim) of `model` from token batches (batch, seq)."""
    sample = sample_queries(model, batches, num_samples, seed)
    return filters_from_queries(sample.queries, query_groups(model), sign_rule)


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

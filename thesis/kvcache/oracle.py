"""What a compressed prefix does to the tokens after it, and the future-attention oracle that knows them.

Shared by the miniature's M4 (`mini/reconstruction.py`) and `kv_ea_reconstruction`
(`reconstruction_eval.py`), thesis Fig. 4.46:
- `continuation_run`: a prefix is prefilled (compressed once under a press, or whole), then the
  continuation runs on that cache at its absolute positions; recorded for the continuation: the hidden
  states after every decoder layer, every self-attention's output, every layer's post-RoPE queries,
  and the KV pairs the cache held for the prefix;
- `layer_errors`: per layer and sequence, the mean over continuation tokens of ||h - h_compr||_2;
- `FutureAttentionPress` (the figure's "optimal"; the thesis does not define it): per layer and KV head,
  keep the prefix pairs with the largest a_ti ||v_i|| (eq. 4.11 with ||v|| for ||W_o v||, as the EA
  experiments, spec E.11), a_ti the softmax over the prefix keys of the continuation's true queries t
  from the uncompressed run, averaged over t and over the query heads sharing the KV head. It knows
  the future, so it is an oracle for the score, not a proof of minimal error.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from transformers import DynamicCache

from thesis.core.models import with_cache
from thesis.kvcache.press import Press, PressBase, cache_entries, decoder
from thesis.kvcache.queries import group_mean, post_rope_queries


@dataclass(frozen=True)
class ContinuationRun:
    """The continuation's states per layer, (layers, batch, m, hidden) each; its post-RoPE queries
    (batch, heads, m, head_dim) per layer; the KV pairs stored for the prefix (summed over layers,
    batch and KV heads) when the continuation came."""

    residual: Tensor
    attention_output: Tensor
    queries: list[Tensor]
    prefix_pairs: int


@torch.no_grad()
def continuation_run(model: nn.Module, prefix: Tensor, continuation: Tensor,
                     press: PressBase | None) -> ContinuationRun:
    """Prefill `prefix` (under `press` when given), then run `continuation` on that cache (module docstring)."""
    layers = decoder(model).layers
    queries: dict[int, Tensor] = {}
    outputs: dict[int, Tensor] = {}

    def record_queries(module, args, kwargs):
        queries[module.layer_idx] = post_rope_queries(module, kwargs["hidden_states"], kwargs["position_embeddings"])

    def record_output(module, args, kwargs, output):
        outputs[module.layer_idx] = output[0].float()

    cache = DynamicCache(config=model.config)
    start = prefix.shape[1]
    positions = torch.arange(start, start + continuation.shape[1], device=model.device)[None]
    with press(model) if press is not None else nullcontext():
        model(input_ids=prefix.to(model.device), **with_cache(model, cache))
        prefix_pairs = cache_entries(cache)
        handles = [hook for layer in layers for hook in (
            layer.self_attn.register_forward_pre_hook(record_queries, with_kwargs=True),
            layer.self_attn.register_forward_hook(record_output, with_kwargs=True))]
        try:
            out = model(input_ids=continuation.to(model.device), **with_cache(model, cache), position_ids=positions,
                        output_hidden_states=True)
        finally:
            for handle in handles:
                handle.remove()
    return ContinuationRun(torch.stack(out.hidden_states[1:]).float(),
                           torch.stack([outputs[i] for i in range(len(layers))]),
                           [queries[i] for i in range(len(layers))], prefix_pairs)


def layer_errors(reference: Tensor, compressed: Tensor) -> Tensor:
    """(layers, batch) mean over tokens of ||reference - compressed||_2, for states (layers, batch, m, hidden)."""
    return (reference - compressed).norm(dim=-1).mean(dim=-1).cpu()


@dataclass
class FutureAttentionPress(Press):
    """Oracle: keep the pairs the continuation's true queries weigh most, a_ti ||v_i|| (module docstring)."""

    future_queries: list[Tensor] = field(default_factory=list, repr=False)

    def score(self, module: nn.Module, hidden_states: Tensor, keys: Tensor, values: Tensor,
              attentions: Tensor | None, kwargs: dict[str, Any]) -> Tensor:
        queries = self.future_queries[module.layer_idx].float()
        expanded = keys.repeat_interleave(module.num_key_value_groups, dim=1).float()
        weights = ((queries @ expanded.transpose(-1, -2)) * module.scaling).softmax(dim=-1).mean(dim=-2)
        return group_mean(weights, module.num_key_value_groups) * values.float().norm(dim=-1)

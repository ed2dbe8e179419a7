"""One forward pass of a chunk, kept per attention layer: the layer's input hidden states (what W_Q,
W_K and W_V see, eqs. 4.1 and 4.8), its (cos, sin) RoPE tables, and its cached post-RoPE keys and values.

Attention weights are not asked from the model (sdpa returns none); the analyses recompute the rows
they need with `queries.window_attention`, which equals eager attention (tested in test_press.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from transformers import DynamicCache

from thesis.core.models import with_cache
from thesis.kvcache.press import decoder
from thesis.kvcache.queries import post_rope_queries, pre_rope_queries, window_attention


@dataclass
class LayerPass:
    """What one attention layer received and cached for a (batch, seq) input."""

    module: nn.Module
    hidden_states: Tensor  # (batch, seq, hidden)
    position_embeddings: tuple[Tensor, Tensor]  # (batch, seq, head_dim) each
    keys: Tensor  # (batch, kv_heads, cached, head_dim), post-RoPE
    values: Tensor

    @torch.no_grad()
    def queries(self, rotated: bool = True) -> Tensor:
        """(batch, heads, seq, head_dim) queries of the input positions, after or before RoPE."""
        if rotated:
            return post_rope_queries(self.module, self.hidden_states, self.position_embeddings)
        return pre_rope_queries(self.module, self.hidden_states)

    @torch.no_grad()
    def attention(self, window: int | None = None) -> Tensor:
        """(batch, heads, window, cached) causal attention weights of the last `window` inputs (all by default)."""
        return window_attention(self.module, self.hidden_states, self.keys, self.position_embeddings,
                                window or self.hidden_states.shape[1])


@torch.no_grad()
def forward_layers(model: nn.Module, input_ids: Tensor, cache: DynamicCache | None = None) -> list[LayerPass]:
    """Run `input_ids` (continuing `cache` when given) and return one `LayerPass` per layer."""
    layers = decoder(model).layers
    inputs: dict[int, tuple[Tensor, tuple[Tensor, Tensor]]] = {}

    def capture(module, args, kwargs):
        inputs[module.layer_idx] = (kwargs["hidden_states"], kwargs["position_embeddings"])

    cache = cache if cache is not None else DynamicCache(config=model.config)
    start = cache.get_seq_length()
    positions = torch.arange(start, start + input_ids.shape[1], device=model.device)[None]
    handles = [layer.self_attn.register_forward_pre_hook(capture, with_kwargs=True) for layer in layers]
    try:
        model(input_ids=input_ids.to(model.device), position_ids=positions, **with_cache(model, cache))
    finally:
        for handle in handles:
            handle.remove()
    return [LayerPass(layer.self_attn, *inputs[i], cache.layers[i].keys, cache.layers[i].values)
            for i, layer in enumerate(layers)]

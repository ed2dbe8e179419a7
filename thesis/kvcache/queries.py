"""Queries and attention weights recomputed from an attention layer's input (eqs. 4.1, 4.2, 4.8, 4.9).

Attention-based scorers (SnapKV, TOVA, observed attention) and Q-Filters calibration need the
queries, which the cache does not keep. They are recomputed from the layer's input hidden states
with the layer's own `q_proj` (and `q_norm` where the model has one, Qwen3) and rotated with the
same (cos, sin) the layer received, so the weights equal those of eager attention. With eager
attention the layer's own weights are used instead (`attentions` argument of the scorers).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def rotate_half(x: Tensor) -> Tensor:
    """(x1, x2) -> (-x2, x1) on the last dimension: the RoPE pairing used by Llama-style models."""
    first, second = x.chunk(2, dim=-1)
    return torch.cat([-second, first], dim=-1)


def pre_rope_queries(module: nn.Module, hidden_states: Tensor) -> Tensor:
    """(batch, heads, seq, head_dim) queries W_Q h before RoPE (eq. 4.1)."""
    queries = module.q_proj(hidden_states).view(*hidden_states.shape[:2], -1, module.head_dim)
    if hasattr(module, "q_norm"):
        queries = module.q_norm(queries)
    return queries.transpose(1, 2)


def pre_rope_keys(module: nn.Module, hidden_states: Tensor) -> Tensor:
    """(batch, kv_heads, seq, head_dim) keys W_K h before RoPE (and `k_norm` where the model has one)."""
    keys = module.k_proj(hidden_states).view(*hidden_states.shape[:2], -1, module.head_dim)
    if hasattr(module, "k_norm"):
        keys = module.k_norm(keys)
    return keys.transpose(1, 2)


def post_rope_queries(module: nn.Module, hidden_states: Tensor, position_embeddings: tuple[Tensor, Tensor]) -> Tensor:
    """(batch, heads, seq, head_dim) queries R_i W_Q h_i (eq. 4.8); cos, sin (batch, seq, head_dim)."""
    cos, sin = (t.unsqueeze(1) for t in position_embeddings)
    queries = pre_rope_queries(module, hidden_states)
    return queries * cos + rotate_half(queries) * sin


def window_attention(module: nn.Module, hidden_states: Tensor, keys: Tensor,
                     position_embeddings: tuple[Tensor, Tensor], window: int) -> Tensor:
    """Causal attention weights (batch, heads, window, seq) of the last `window` queries (eq. 4.9).

    `keys` are the layer's cached keys, one per input position, so query j of the window sits at
    position seq - window + j and sees keys 0..seq - window + j.
    """
    cos, sin = position_embeddings
    queries = post_rope_queries(module, hidden_states[:, -window:], (cos[:, -window:], sin[:, -window:]))
    keys = keys.repeat_interleave(module.num_key_value_groups, dim=1)
    logits = (queries.float() @ keys.float().transpose(-1, -2)) * module.scaling
    n = keys.shape[-2]
    future = torch.arange(n, device=keys.device)[None, :] > torch.arange(n - window, n, device=keys.device)[:, None]
    return logits.masked_fill(future, float("-inf")).softmax(dim=-1)


def group_mean(scores: Tensor, groups: int) -> Tensor:
    """(batch, heads, ...) -> (batch, kv_heads, ...): mean over the query heads sharing a KV head."""
    return scores.view(scores.shape[0], -1, groups, *scores.shape[2:]).mean(dim=2)

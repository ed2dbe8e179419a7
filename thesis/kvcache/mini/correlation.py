"""M1 of the miniature (spec F.b; thesis Figs. 4.1, 4.2, 4.7, 4.40, 4.50): do the presses' scores
track the attention keys actually receive?

Per (layer, query head) of held-out chunks run with eager attention:
- attention received S_t = 1/(n - t) sum_{i >= t} A_it (spec 0, 0-based t; the queries that see t);
- Spearman rho between S and each score over positions: KNorm -||k_t|| (the query head's KV head),
  Q-Filters <k_t, v_1^+>, and the Expected Attention logit mu_bar.k/sqrt(d) + k S_bar k/(2d) (eq. 4.14)
  with query statistics from the first `stats_tokens` inputs but the press's `n_sink` sinks (left out
  of the statistics, as the press does) and RoPE averaged over the `n_future` positions after them
  (eq. 4.13), computed with the press's own `query_moments` and `averaged_rotation`;
- ALR (eqs. 4.5-4.7): the attention a of the chunk's last query over the earlier keys (its own
  position excluded); evicting m keys in a given order loses the sum of their a; the loss minus the
  loss of the ideal order (lowest attention first), summed over m = 1..n, for KNorm's order (highest
  norm first) and for a random order;
- BOS sink: whether position 0 has the smallest key norm, and the largest S;
- Q-Filters sign: the mean <k, v_1^+> of each (layer, KV head) (the thesis's epsilon = -1 when < 0).
Per-chunk values are averaged over chunks; the BOS indicators become fractions of chunks.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn
from transformers import DynamicCache

from thesis.core.evaluate import progress
from thesis.core.models import with_cache
from thesis.kvcache.expected_attention import ExpectedAttentionPress, averaged_rotation


def attention_received(attentions: Tensor) -> Tensor:
    """S (..., n) from causal attention weights (..., n, n): column sums over the n - t queries that see t."""
    n = attentions.shape[-1]
    return attentions.sum(dim=-2) / torch.arange(n, 0, -1, device=attentions.device, dtype=attentions.dtype)


def ranks(x: Tensor) -> Tensor:
    """0-based ordinal ranks along the last dimension (ties broken by position)."""
    return x.argsort(dim=-1, stable=True).argsort(dim=-1).to(torch.float64)


def spearman(x: Tensor, y: Tensor) -> Tensor:
    """Spearman correlation along the last dimension (Pearson correlation of the ranks)."""
    rx, ry = ranks(x), ranks(y)
    rx, ry = rx - rx.mean(-1, keepdim=True), ry - ry.mean(-1, keepdim=True)
    return (rx * ry).sum(-1) / (rx.norm(dim=-1) * ry.norm(dim=-1))


def attention_loss_ratio(attention: Tensor, eviction_order: Tensor) -> Tensor:
    """y = sum_m (L^m - L^{m,ref}) (eqs. 4.5-4.7) for attention (..., n) and an order (..., n) of positions
    to evict; the reference evicts the lowest attention first, so y >= 0 and y(ideal) = 0."""
    lost = attention.gather(-1, eviction_order).cumsum(-1)
    ideal = attention.sort(dim=-1).values.cumsum(-1)
    return (lost - ideal).sum(-1)


def ea_logits(press: ExpectedAttentionPress, module: nn.Module, hidden_states: Tensor, keys: Tensor,
              stats_tokens: int) -> Tensor:
    """(batch, heads, n) Expected Attention logits (eq. 4.14) per query head, statistics from the inputs
    n_sink .. stats_tokens - 1 (the press's sinks left out, as in its `score`)."""
    if stats_tokens <= press.n_sink:
        raise ValueError(f"Expected Attention statistics need more than n_sink={press.n_sink} tokens; "
                         f"got stats_tokens={stats_tokens}.")
    d = keys.shape[-1]
    mean, covariance = press.query_moments(module, hidden_states[:, press.n_sink:stats_tokens])
    rotation = averaged_rotation(press.rotary, stats_tokens, press.n_future_positions, d, keys.device)
    k = keys.float().repeat_interleave(module.num_key_value_groups, dim=1)
    mean, covariance = mean @ rotation.T, rotation @ covariance @ rotation.T
    return (k @ mean.unsqueeze(-1)).squeeze(-1) / math.sqrt(d) + torch.einsum("bhnd,bhde,bhne->bhn", k, covariance, k) / (2 * d)


@torch.no_grad()
def correlation_analysis(model: nn.Module, chunks: Tensor, filters: Tensor, n_future: int, stats_tokens: int,
                         batch_size: int, seed: int = 0) -> dict[str, Any]:
    """Per-(layer, query head) rows and per-(layer, KV head) Q-Filters signs; `model` runs eager attention."""
    if model.config._attn_implementation != "eager":
        raise ValueError("correlation_analysis needs attention weights: load the model with attn_implementation='eager'")
    layers = model.model.layers
    press = ExpectedAttentionPress(n_future_positions=n_future)
    press.attach(model)
    captured: dict[int, Tensor] = {}

    def capture(module, args, kwargs):
        captured[module.layer_idx] = kwargs["hidden_states"]

    handles = [layer.self_attn.register_forward_pre_hook(capture, with_kwargs=True) for layer in layers]
    generator = torch.Generator().manual_seed(seed)
    sums: dict[str, Tensor] = {}
    projection_sum = None
    try:
        for batch in progress(chunks.split(batch_size), desc="M1 correlation"):
            batch = batch.to(model.device)
            cache = DynamicCache(config=model.config)
            out = model(input_ids=batch, **with_cache(model, cache), output_attentions=True)
            per_layer, projections = [], []
            for index, layer in enumerate(layers):
                module = layer.self_attn
                attn = out.attentions[index].double()  # (B, H, n, n); float64 so near-equal S values rank stably
                keys = cache.layers[index].keys.double()
                groups = module.num_key_value_groups
                norms = keys.norm(dim=-1).repeat_interleave(groups, dim=1)
                proj = torch.einsum("bhnd,hd->bhn", keys, filters[index].to(keys))
                received = attention_received(attn)
                last = attn[:, :, -1, :-1]
                random_order = torch.rand(last.shape, generator=generator).to(last.device).argsort(-1)
                per_layer.append(torch.stack([
                    spearman(-norms, received),
                    spearman(proj.repeat_interleave(groups, dim=1), received),
                    spearman(ea_logits(press, module, captured[index], keys, stats_tokens), received),
                    attention_loss_ratio(last, norms[..., :-1].argsort(-1, descending=True)),
                    attention_loss_ratio(last, random_order),
                    (norms.argmin(-1) == 0).double(),
                    (received.argmax(-1) == 0).double(),
                    ((norms.argmin(-1) == 0) & (received.argmax(-1) == 0)).double(),
                ], dim=-1).sum(0).double().cpu())  # (H, 7) summed over the batch
                projections.append(proj.mean(-1).sum(0).double().cpu())
            stacked, proj_stack = torch.stack(per_layer), torch.stack(projections)
            sums["rows"] = sums.get("rows", 0) + stacked
            projection_sum = proj_stack if projection_sum is None else projection_sum + proj_stack
    finally:
        for handle in handles:
            handle.remove()
    means = sums["rows"] / chunks.shape[0]
    names = ("rho_knorm", "rho_qfilters", "rho_ea", "alr_knorm", "alr_random", "bos_min_norm", "bos_max_attention",
             "bos_sink")
    rows = [{"layer": l, "head": h, **{name: float(means[l, h, i]) for i, name in enumerate(names)}}
            for l in range(means.shape[0]) for h in range(means.shape[1])]
    signs = projection_sum / chunks.shape[0]
    sign_rows = [{"layer": l, "kv_head": h, "mean_projection": float(signs[l, h])}
                 for l in range(signs.shape[0]) for h in range(signs.shape[1])]
    return {"heads": rows, "filters": sign_rows}

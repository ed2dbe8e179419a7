"""Attention loss of KNorm vs ideal eviction (thesis 4.1.3-4.1.4, eqs. 4.5-4.7; Figs. 4.2 and 4.7).

Per chunk of n + 1 tokens the first n form the prompt and the last one plays x_{n+1}: a_{l,h,p} is its
attention to prompt position p (its own key left out, as the authors' code does). Evicting m pairs
loses L^m = sum of a over the evicted positions (eq. 4.5). The ideal compression evicts the lowest
attention first (the reference), L2 compression the highest key norm first (KNorm's rule, the norm of
the head's KV head under GQA); y^m = L^m - L^{m,ref} >= 0 (eq. 4.6) and ALR y = sum_{m=1..n} y^m
(eq. 4.7), computed by `mini.correlation.attention_loss_ratio`. Curves of L^m against the
compression ratio m / n (Fig. 4.7) and the ALR heat-map (Fig. 4.2) are averaged over chunks.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import torch
from torch import Tensor, nn

from thesis.core.errors import ConfigError
from thesis.core.evaluate import progress
from thesis.core.plotting import new_figure, save_figure
from thesis.core.rundir import RunDir
from thesis.kvcache.analysis.capture import forward_layers
from thesis.kvcache.analysis.figures import layer_head_heatmap
from thesis.kvcache.mini.correlation import attention_loss_ratio


def eviction_losses(attention: Tensor, order: Tensor) -> Tensor:
    """L^m (eq. 4.5) for m = 0..n (..., n + 1): attention (..., n) lost by evicting the first m of `order`."""
    lost = attention.gather(-1, order).cumsum(-1)
    return torch.cat([torch.zeros_like(lost[..., :1]), lost], dim=-1)


def ideal_order(attention: Tensor) -> Tensor:
    """Positions by increasing attention: the reference compression evicts these first."""
    return attention.argsort(dim=-1, stable=True)


def l2_order(keys: Tensor, groups: int) -> Tensor:
    """Positions by decreasing key norm per query head (keys (batch, kv_heads, n, d), repeated over GQA groups)."""
    return keys.float().norm(dim=-1).repeat_interleave(groups, dim=1).argsort(dim=-1, descending=True, stable=True)


def losses_at_ratios(losses: Tensor, ratios: list[float]) -> Tensor:
    """L^m at m = round(r n) for each compression ratio r: (..., n + 1) -> (..., len(ratios))."""
    n = losses.shape[-1] - 1
    index = torch.tensor([round(r * n) for r in ratios], device=losses.device)
    return losses.index_select(-1, index)


@torch.no_grad()
def attention_loss_analysis(model: nn.Module, chunks: Tensor, ratios: list[float]) -> dict[str, Tensor]:
    """Chunk means: `alr` (layers, heads), `ideal` and `l2` losses (layers, heads, ratios)."""
    totals: dict[str, Tensor] = {}
    for chunk in progress(chunks, desc="ALR chunks"):
        per_layer = {"alr": [], "ideal": [], "l2": []}
        for layer in forward_layers(model, chunk[None]):
            attention = layer.attention(window=1)[:, :, 0, :-1].double()  # (1, heads, n)
            norm_order = l2_order(layer.keys[:, :, :-1], layer.module.num_key_value_groups)
            per_layer["alr"].append(attention_loss_ratio(attention, norm_order)[0])
            per_layer["ideal"].append(losses_at_ratios(eviction_losses(attention, ideal_order(attention)), ratios)[0])
            per_layer["l2"].append(losses_at_ratios(eviction_losses(attention, norm_order), ratios)[0])
        for name, values in per_layer.items():
            totals[name] = totals.get(name, 0) + torch.stack(values).cpu()
    return {name: total / len(chunks) for name, total in totals.items()}


def alr_heatmap(alr: Tensor, run: RunDir, figure_id: str) -> None:
    fig, ax = new_figure(5.0, 4.0)
    layer_head_heatmap(fig, ax, alr, "ALR (eq. 4.7), lower = norm tracks attention", cmap="viridis")
    save_figure(fig, run.path, figure_id)


def loss_curves(curves: pd.DataFrame, heads: list[tuple[int, int]], run: RunDir, figure_id: str) -> None:
    fig, axes = new_figure(4.0 * len(heads), 3.2, ncols=len(heads))
    axes = axes if len(heads) > 1 else [axes]
    for ax, (layer, head) in zip(axes, heads):
        part = curves[(curves["layer"] == layer) & (curves["head"] == head)].sort_values("ratio")
        ax.plot(part.ratio, part.loss_ideal, label="ideal (lowest attention)")
        ax.plot(part.ratio, part.loss_l2, label="L2 (highest key norm)")
        ax.set_title(f"layer {layer}, head {head}")
        ax.set_xlabel("compression ratio")
        ax.set_ylabel("attention loss (eq. 4.5)")
    axes[0].legend(fontsize=7)
    save_figure(fig, run.path, figure_id)


def run(model: nn.Module, chunks: Tensor, cfg: Any, run_dir: RunDir) -> dict[str, float]:
    """Tables `alr` (layer, head, alr) and `attention_loss` (layer, head, ratio, loss_ideal, loss_l2); Figs. 4.2, 4.7."""
    ratios = [float(r) for r in cfg.ratios]
    if not ratios or min(ratios) < 0 or max(ratios) > 1:
        raise ConfigError(f"method.alr.ratios must lie in [0, 1]; got {ratios}")
    found = attention_loss_analysis(model, chunks, ratios)
    n_layers, n_heads = found["alr"].shape
    heads = [(int(layer), int(head)) for layer, head in cfg.curve_heads]
    for layer, head in heads:
        if not (0 <= layer < n_layers and 0 <= head < n_heads):
            raise ConfigError(f"method.alr.curve_heads holds ({layer}, {head}); the model has {n_layers} layers "
                              f"x {n_heads} heads")
    run_dir.write_table("alr", [{"layer": l, "head": h, "alr": float(found["alr"][l, h])}
                                for l in range(n_layers) for h in range(n_heads)])
    curves = pd.DataFrame([{"layer": l, "head": h, "ratio": r, "loss_ideal": float(found["ideal"][l, h, i]),
                            "loss_l2": float(found["l2"][l, h, i])}
                           for l in range(n_layers) for h in range(n_heads) for i, r in enumerate(ratios)])
    run_dir.write_table("attention_loss", curves.to_dict("records"))
    alr_heatmap(found["alr"], run_dir, "kv_alr_heatmap")
    loss_curves(curves, heads, run_dir, "kv_attention_loss_vs_ratio")
    per_layer = found["alr"].mean(dim=1)
    metrics = {"alr/mean": float(per_layer.mean()), "alr/first_two_layers": float(per_layer[:2].mean()),
               "alr/argmax_layer": int(per_layer.argmax())}
    if n_layers > 2:
        metrics["alr/other_layers"] = float(per_layer[2:].mean())
    return metrics

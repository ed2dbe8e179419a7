"""Are hidden states and queries Gaussian? (thesis 4.3, Figs. 4.41, 4.47-4.49: "predominantly unimodal
... approximated as Gaussian distributions, albeit with the presence of a few heavy-tailed outliers").

Expected Attention models the hidden states h that W_Q reads as N(mu, Sigma) (eq. 4.12), so the
hidden states measured here are each attention layer's input (after its input norm; the thesis says
"before the MLP layers", read as the states the query projection sees), and the queries are W_Q h
before RoPE (q_norm included where the model has one), per head. The first `skip_first` positions (the
sinks Expected Attention leaves out of its statistics, BOS included) are left out.

Per (layer, kind, head, dim), over every other token of every chunk (streamed raw moments, float64):
mean, std, skewness and excess kurtosis (0 for a Gaussian). Per (layer, kind, head): the median |skew|,
median and max excess kurtosis, and the share of dims with |skew| < `skew_tol` and |kurtosis| <
`kurtosis_tol` ("near-Gaussian"). QQ summary (figures): for the `show` layers / heads, the pooled values
of the first chunk standardised per dim, their histogram against N(0, 1) and the probability-plot
correlation coefficient (scipy.stats.probplot's r; 1 for a perfect normal QQ line).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy import stats
from torch import Tensor, nn

from thesis.core.errors import ConfigError
from thesis.core.evaluate import progress
from thesis.core.plotting import new_figure, save_figure
from thesis.core.rundir import RunDir
from thesis.kvcache.analysis.capture import forward_layers


def moments_from_sums(count: int, sums: Tensor) -> dict[str, Tensor]:
    """Mean, std, skewness, excess kurtosis from raw power sums (4, ...) = sum x^1..x^4 over `count` values."""
    m1, m2, m3, m4 = (sums[i] / count for i in range(4))
    variance = (m2 - m1 ** 2).clamp_min(0)
    central3 = m3 - 3 * m1 * m2 + 2 * m1 ** 3
    central4 = m4 - 4 * m1 * m3 + 6 * m1 ** 2 * m2 - 3 * m1 ** 4
    std = variance.sqrt()
    safe = variance.clamp_min(torch.finfo(variance.dtype).tiny)
    return {"mean": m1, "std": std, "skew": central3 / safe ** 1.5, "excess_kurtosis": central4 / safe ** 2 - 3}


def power_sums(x: Tensor) -> Tensor:
    """(4, ...) sums of x^1..x^4 over the first dimension of x (N, ...), in float64."""
    x = x.double()
    return torch.stack([x.sum(0), x.pow(2).sum(0), x.pow(3).sum(0), x.pow(4).sum(0)])


def standardised(x: Tensor) -> np.ndarray:
    """Values of x (N, dims) standardised per dim, pooled."""
    x = x.double()
    return ((x - x.mean(0)) / x.std(0).clamp_min(1e-12)).flatten().numpy()


@torch.no_grad()
def collect(model: nn.Module, chunks: Tensor, skip_first: int) -> tuple[int, list[Tensor], list[Tensor], list[tuple[Tensor, Tensor]]]:
    """Token count, per-layer power sums of hidden states (4, hidden) and queries (4, heads, d), and the
    first chunk's (hidden (N, hidden), queries (N, heads, d)) per layer."""
    hidden_sums: list[Tensor] = []
    query_sums: list[Tensor] = []
    first: list[tuple[Tensor, Tensor]] = []
    count = 0
    for number, chunk in enumerate(progress(chunks, desc="activation moments")):
        for index, layer in enumerate(forward_layers(model, chunk[None])):
            hidden = layer.hidden_states[0, skip_first:].float().cpu()
            queries = layer.queries(rotated=False)[0, :, skip_first:].transpose(0, 1).float().cpu()
            if number == 0:
                hidden_sums.append(power_sums(hidden))
                query_sums.append(power_sums(queries))
                first.append((hidden, queries))
            else:
                hidden_sums[index] += power_sums(hidden)
                query_sums[index] += power_sums(queries)
        count += chunk.numel() - skip_first
    return count, hidden_sums, query_sums, first


def summary(moments: dict[str, Tensor], skew_tol: float, kurtosis_tol: float) -> dict[str, float]:
    skew, kurt = moments["skew"], moments["excess_kurtosis"]
    return {"median_abs_skew": float(skew.abs().median()), "median_excess_kurtosis": float(kurt.median()),
            "max_excess_kurtosis": float(kurt.max()),
            "near_gaussian_share": float(((skew.abs() < skew_tol) & (kurt.abs() < kurtosis_tol)).double().mean())}


def qq_panel(ax, values: np.ndarray, title: str) -> float:
    (_, _), (_, _, r) = stats.probplot(values, dist="norm")
    grid = np.linspace(-5, 5, 200)
    ax.hist(np.clip(values, -5, 5), bins=80, density=True, alpha=0.7)
    ax.plot(grid, stats.norm.pdf(grid), "k--", linewidth=1)
    ax.set_title(f"{title}\nQQ r = {r:.3f}", fontsize=8)
    ax.set_xlabel("standardised value")
    return float(r)


def run(model: nn.Module, chunks: Tensor, cfg: Any, run_dir: RunDir) -> dict[str, float]:
    """Tables `activation_moments` (per dim) and `activation_summary` (per layer, kind, head); Figs. 4.41, 4.47-4.49."""
    if not 0 <= cfg.skip_first < chunks.shape[1] - 2:
        raise ConfigError(f"method.activation_stats.skip_first must lie in [0, {chunks.shape[1] - 3}]; got {cfg.skip_first}")
    count, hidden_sums, query_sums, first = collect(model, chunks, cfg.skip_first)
    n_layers, n_heads = len(hidden_sums), query_sums[0].shape[1]
    show_layers = [int(layer) for layer in cfg.show_layers]
    show_heads = [int(head) for head in cfg.show_heads]
    if any(not 0 <= l < n_layers for l in show_layers) or any(not 0 <= h < n_heads for h in show_heads):
        raise ConfigError(f"method.activation_stats.show_layers / show_heads ({show_layers}, {show_heads}) must "
                          f"index the model's {n_layers} layers and {n_heads} heads")
    per_dim, per_head = [], []
    for layer in range(n_layers):
        parts = [("hidden", -1, moments_from_sums(count, hidden_sums[layer]))]
        queries = moments_from_sums(count, query_sums[layer])
        parts += [("query", h, {name: value[h] for name, value in queries.items()}) for h in range(n_heads)]
        for kind, head, moments in parts:
            per_dim += [{"layer": layer, "kind": kind, "head": head, "dim": d, **{k: float(v[d]) for k, v in moments.items()}}
                        for d in range(len(moments["mean"]))]
            per_head.append({"layer": layer, "kind": kind, "head": head,
                             **summary(moments, cfg.skew_tol, cfg.kurtosis_tol)})
    run_dir.write_table("activation_moments", per_dim)
    run_dir.write_table("activation_summary", per_head)
    metrics: dict[str, float] = {}
    fig, axes = new_figure(3.0 * len(show_layers), 2.8, ncols=len(show_layers))
    for ax, layer in zip(np.atleast_1d(axes), show_layers):
        metrics[f"activation_stats/qq_r/hidden/layer{layer}"] = qq_panel(ax, standardised(first[layer][0]),
                                                                         f"hidden states, layer {layer}")
    save_figure(fig, run_dir.path, "kv_hidden_state_distribution")
    fig, grid = new_figure(3.0 * len(show_heads), 2.8 * len(show_layers), ncols=len(show_heads),
                           nrows=len(show_layers))
    for row, layer in zip(grid, show_layers):
        for ax, head in zip(row, show_heads):
            metrics[f"activation_stats/qq_r/query/layer{layer}_head{head}"] = qq_panel(
                ax, standardised(first[layer][1][:, head]), f"queries, layer {layer}, head {head}")
    save_figure(fig, run_dir.path, "kv_query_distribution")
    table = pd.DataFrame(per_head)
    for kind, part in table.groupby("kind"):
        metrics[f"activation_stats/{kind}/near_gaussian_share"] = float(part.near_gaussian_share.mean())
        metrics[f"activation_stats/{kind}/median_excess_kurtosis"] = float(part.median_excess_kurtosis.median())
    return metrics

"""Do press scores predict the attention future queries pay? (thesis 4.3, Fig. 4.50: observed vs
expected attention per (layer, head), Llama-3.1-8B, 5K-token sequences, first 1K tokens for the statistics).

Per chunk of n tokens, the first `stats_tokens` = c form the context whose pairs a press would score,
and the queries at positions c..n-1 are the future. Observed attention of context key i (per query
head) = the mean over future queries of their attention weight on i (softmax over every key they see).
Expected attention (eq. 4.15) = softmax over the c context keys of the Expected Attention logits
(eq. 4.14) with query statistics from the context hidden states after the press's n_sink = 4 sinks,
as its `score` takes them (`statistics: hidden`, eq. 4.12; or the pre-RoPE query moments, `queries`,
needed with q_norm) and RoPE averaged over the
`n_future_positions` positions after them (eq. 4.13), as `mini.correlation.ea_logits` computes them
with the press's own `query_moments` and `averaged_rotation`. Each press of `presses` (KNorm, Q-Filters,
Expected Attention's full score (eq. 4.16), ...) scores the context pairs with its own `score`,
per KV head; its target is the observed attention averaged over the KV head's query heads. Pearson's r
and Spearman's rho over context positions, averaged over chunks.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pandas as pd
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import Tensor, nn

from thesis.core.errors import ConfigError
from thesis.core.evaluate import progress
from thesis.core.plotting import new_figure, save_figure
from thesis.core.rundir import RunDir
from thesis.kvcache.analysis.capture import LayerPass, forward_layers
from thesis.kvcache.analysis.figures import layer_head_heatmap
from thesis.kvcache.expected_attention import ExpectedAttentionPress
from thesis.kvcache.mini.correlation import ea_logits, spearman
from thesis.kvcache.press import Press
from thesis.kvcache.qfilters import calibrate_q_filters
from thesis.kvcache.queries import group_mean
from thesis.kvcache.runner import q_filters


def pearson(x: Tensor, y: Tensor) -> Tensor:
    """Pearson correlation along the last dimension."""
    x, y = x.double(), y.double()
    x, y = x - x.mean(-1, keepdim=True), y - y.mean(-1, keepdim=True)
    return (x * y).sum(-1) / (x.norm(dim=-1) * y.norm(dim=-1))


def observed_attention(layer: LayerPass, context: int) -> Tensor:
    """(batch, heads, context) mean attention of the queries after `context` on each context key."""
    return layer.attention(window=layer.hidden_states.shape[1] - context)[..., :context].double().mean(dim=-2)


def build_presses(specs: Mapping[str, Any], model: nn.Module, chunks: Tensor) -> dict[str, Press]:
    """The presses to score with; Q-Filters' `filters: chunks` calibrates on the analysis chunks (3000
    queries per head, thesis sign rule), a path or {random_sequences, length} as in the press runner."""
    presses = {}
    for name, spec in specs.items():
        spec = dict(OmegaConf.to_container(spec, resolve=True))
        if "filters" in spec:
            source = spec.pop("filters")
            spec["filters"] = (calibrate_q_filters(model, chunks.split(1)) if source == "chunks"
                               else q_filters(source, model))
        press = instantiate(spec, _convert_="all")
        if not isinstance(press, Press):
            raise ConfigError(f"method.score_correlation.presses.{name} is not a scoring press: {type(press).__name__}")
        press.attach(model)
        presses[name] = press
    return presses


@torch.no_grad()
def correlations(model: nn.Module, chunks: Tensor, context: int, reference: ExpectedAttentionPress,
                 presses: dict[str, Press]) -> tuple[Tensor, dict[str, Tensor], tuple[Tensor, Tensor]]:
    """Chunk means: EA (layers, heads, 2) [pearson, spearman] of expected vs observed attention, per press
    (layers, kv_heads, 2) of score vs group-mean observed attention; and the first chunk's
    (observed, expected) (layers, heads, context)."""
    ea_sum: Tensor | float = 0.0
    press_sums: dict[str, Tensor | float] = {name: 0.0 for name in presses}
    first: tuple[Tensor, Tensor] | None = None
    for chunk in progress(chunks, desc="score correlation"):
        ea_rows, press_rows, observed_all, expected_all = [], {name: [] for name in presses}, [], []
        for layer in forward_layers(model, chunk[None]):
            module = layer.module
            observed = observed_attention(layer, context)
            hidden = layer.hidden_states[:, :context]
            keys, values = layer.keys[:, :, :context], layer.values[:, :, :context]
            expected = ea_logits(reference, module, hidden, keys, context).double().softmax(dim=-1)
            ea_rows.append(torch.stack([pearson(expected, observed), spearman(expected, observed)], -1)[0].cpu())
            target = group_mean(observed, module.num_key_value_groups)
            kwargs = {"position_ids": torch.arange(context, device=keys.device)[None]}
            for name, press in presses.items():
                score = press.score(module, hidden, keys, values, None, kwargs).double()
                press_rows[name].append(torch.stack([pearson(score, target), spearman(score, target)], -1)[0].cpu())
            observed_all.append(observed[0].cpu())
            expected_all.append(expected[0].cpu())
        ea_sum = ea_sum + torch.stack(ea_rows)
        for name, rows in press_rows.items():
            press_sums[name] = press_sums[name] + torch.stack(rows)
        if first is None:
            first = (torch.stack(observed_all), torch.stack(expected_all))
    return ea_sum / len(chunks), {name: value / len(chunks) for name, value in press_sums.items()}, first


def ea_figure(ea: Tensor, first: tuple[Tensor, Tensor], show: tuple[int, int], run: RunDir) -> None:
    fig, (left, right) = new_figure(10.0, 3.6, ncols=2)
    layer_head_heatmap(fig, left, ea[..., 0], "Pearson r, expected vs observed attention", cmap="viridis",
                       vmin=-1, vmax=1)
    layer, head = show
    observed, expected = first[0][layer, head].numpy(), first[1][layer, head].numpy()
    right.scatter(expected, observed, s=4, alpha=0.5)
    right.set_xscale("log")
    right.set_yscale("log")
    right.set_xlabel("expected attention (eq. 4.15)")
    right.set_ylabel("observed future attention")
    right.set_title(f"layer {layer}, head {head}, first chunk")
    save_figure(fig, run.path, "kv_expected_vs_observed_attention")


def press_figure(table: pd.DataFrame, run: RunDir) -> None:
    fig, ax = new_figure(5.0, 3.2)
    means = table.groupby("press")[["pearson", "spearman"]].mean()
    x = np.arange(len(means))
    ax.bar(x - 0.2, means.pearson, width=0.4, label="Pearson r")
    ax.bar(x + 0.2, means.spearman, width=0.4, label="Spearman rho")
    ax.set_xticks(x, means.index, rotation=20)
    ax.set_ylabel("correlation with observed attention\n(mean over layers, KV heads)")
    ax.legend(fontsize=7)
    save_figure(fig, run.path, "kv_press_score_correlation")


def run(model: nn.Module, chunks: Tensor, cfg: Any, run_dir: RunDir) -> dict[str, float]:
    """Tables `expected_vs_observed` (layer, head, pearson, spearman) and `score_correlation` (layer,
    kv_head, press, pearson, spearman); Fig. 4.50 and a per-press summary."""
    context = int(cfg.stats_tokens)
    reference = ExpectedAttentionPress(n_future_positions=cfg.n_future_positions, statistics=cfg.statistics)
    lowest = max(2, reference.n_sink + 1)
    if not lowest <= context < chunks.shape[1]:
        raise ConfigError(f"method.score_correlation.stats_tokens must lie in [{lowest}, {chunks.shape[1] - 1}] "
                          f"(more than the {reference.n_sink} sinks; the chunk length is {chunks.shape[1]}); "
                          f"got {context}")
    presses = build_presses(cfg.presses, model, chunks)
    reference.attach(model)
    ea, per_press, first = correlations(model, chunks, context, reference, presses)
    n_layers, n_heads = ea.shape[:2]
    layer, head = (int(x) for x in cfg.show)
    if not (0 <= layer < n_layers and 0 <= head < n_heads):
        raise ConfigError(f"method.score_correlation.show holds ({layer}, {head}); the model has {n_layers} layers "
                          f"x {n_heads} heads")
    run_dir.write_table("expected_vs_observed", [{"layer": l, "head": h, "pearson": float(ea[l, h, 0]),
                                                  "spearman": float(ea[l, h, 1])}
                                                 for l in range(n_layers) for h in range(n_heads)])
    rows = [{"layer": l, "kv_head": h, "press": name, "pearson": float(v[l, h, 0]), "spearman": float(v[l, h, 1])}
            for name, v in per_press.items() for l in range(v.shape[0]) for h in range(v.shape[1])]
    run_dir.write_table("score_correlation", rows)
    ea_figure(ea, first, (layer, head), run_dir)
    metrics = {"score_correlation/expected_attention/pearson": float(ea[..., 0].mean()),
               "score_correlation/expected_attention/spearman": float(ea[..., 1].mean())}
    if rows:
        table = pd.DataFrame(rows)
        press_figure(table, run_dir)
        for name, part in table.groupby("press"):
            metrics[f"score_correlation/{name}/spearman"] = float(part.spearman.mean())
            metrics[f"score_correlation/{name}/pearson"] = float(part.pearson.mean())
    return metrics

"""The query/key geometry behind Q-Filters (thesis 4.2, Hypotheses 4.2.2-4.2.3, Prop. 4.2.1; Figs. 4.30, 4.40).

Calibration (the first `calibration_chunks` chunks): post-RoPE queries of every (layer, head) at most
`num_samples` token positions, sampled as Q-Filters calibration samples them (`qfilters.sample_queries`:
uniform over the chunks' tokens, the same positions for every head); SVD Q = U S V^T per head. Per head:
- `explained_first`: S_1^2 / sum S_m^2, the share of the queries' (uncentred) energy on v_1;
- |E<q, v_m>| for every component m (Fig. 4.30c: only m = 1 is far from 0, Hypothesis 4.2.3);
- v_1^+ = v_1 of that SVD oriented by `qfilters.oriented` (thesis sign rule, or the authors' majority
  vote), as `qfilters.dominant_direction` orients it, kappa =
  E<q, v_1^+> > 0 and the share of queries with <q, v_1^+> > 0 (sign consistency of the queries).
Evaluation (every chunk): the post-RoPE keys of the head's KV head projected on the head's v_1^+:
their mean (epsilon = its sign, Hypothesis 4.2.2), the share of keys with that sign, and Spearman's
rho between each press score and the attention received S_t = mean_{i >= t} A_it (spec 0) per
(layer, head): Q-Filters <k, f> with f the GQA-averaged filter the press uses, and KNorm -||k||
(Fig. 4.40). Values are chunk means.
"""

from __future__ import annotations

from typing import Any, Literal

import pandas as pd
import torch
from torch import Tensor, nn

from thesis.core.errors import ConfigError
from thesis.core.evaluate import progress
from thesis.core.plotting import new_figure, save_figure
from thesis.core.rundir import RunDir
from thesis.kvcache.analysis.capture import forward_layers
from thesis.kvcache.analysis.figures import layer_head_heatmap
from thesis.kvcache.mini.correlation import attention_received, spearman
from thesis.kvcache.qfilters import oriented, sample_queries
from thesis.kvcache.queries import group_mean


def head_geometry(queries: Tensor, sign_rule: Literal["sum", "majority"]) -> dict[str, Tensor]:
    """For queries (N, d): v_1^+ (d,), the singular values' first share, |E<q, v_m>| (d,), kappa, query sign share."""
    queries = queries.double()
    left, singular, right = torch.linalg.svd(queries, full_matrices=False)
    direction = oriented(left[:, 0], right[0], sign_rule)
    projection = queries @ direction
    return {"direction": direction, "explained_first": singular[0] ** 2 / singular.pow(2).sum(),
            "component_abs_mean": (queries @ right.T).mean(0).abs(), "kappa": projection.mean(),
            "query_positive_fraction": (projection > 0).double().mean()}


@torch.no_grad()
def key_statistics(model: nn.Module, chunks: Tensor, directions: Tensor) -> dict[str, Tensor]:
    """Chunk means (layers, heads): key mean projection, share of keys on the mean's side, rho of Q-Filters
    and KNorm scores with the attention received; plus the first chunk's key projections."""
    sums: dict[str, Tensor] = {}
    first: list[Tensor] = []
    for number, chunk in enumerate(progress(chunks, desc="key geometry")):
        rows = []
        for index, layer in enumerate(forward_layers(model, chunk[None])):
            groups = layer.module.num_key_value_groups
            keys = layer.keys[0].double().repeat_interleave(groups, dim=0)  # (heads, n, d)
            own = directions[index].to(keys)
            projection = torch.einsum("hnd,hd->hn", keys, own)
            filters = group_mean(own[None], groups)[0].repeat_interleave(groups, dim=0)
            received = attention_received(layer.attention()[0].double())
            side = torch.sign(projection.mean(-1, keepdim=True))
            rows.append(torch.stack([projection.mean(-1), (torch.sign(projection) == side).double().mean(-1),
                                     spearman(torch.einsum("hnd,hd->hn", keys, filters), received),
                                     spearman(-keys.norm(dim=-1), received)], dim=-1).cpu())
            if number == 0:
                first.append(projection.cpu())
        stacked = torch.stack(rows)
        sums["keys"] = sums.get("keys", 0) + stacked
    means = sums["keys"] / len(chunks)
    return {"key_mean_projection": means[..., 0], "key_sign_consistency": means[..., 1],
            "rho_qfilters": means[..., 2], "rho_knorm": means[..., 3], "first_chunk_projections": torch.stack(first)}


def projection_figure(queries: list[Tensor], directions: Tensor, keys: Tensor, heads: list[tuple[int, int]],
                      run: RunDir) -> None:
    fig, axes = new_figure(4.0 * len(heads), 3.2, ncols=len(heads))
    axes = axes if len(heads) > 1 else [axes]
    for ax, (layer, head) in zip(axes, heads):
        ax.hist((queries[layer][head].double() @ directions[layer, head]).numpy(), bins=50, alpha=0.6, density=True,
                label="<q, u>")
        ax.hist(keys[layer, head].numpy(), bins=50, alpha=0.6, density=True, label="<k, u>")
        ax.set_title(f"layer {layer}, head {head}")
        ax.set_xlabel("projection on u (v_1^+)")
    axes[0].legend(fontsize=7)
    save_figure(fig, run.path, "kv_qk_projections")


def component_figure(curve: Tensor, run: RunDir) -> None:
    fig, ax = new_figure(5.0, 3.2)
    ax.plot(range(1, len(curve) + 1), curve.numpy(), marker=".")
    ax.set_xlabel("SVD component m")
    ax.set_ylabel("|E<q, v_m>|, mean over layers and heads")
    save_figure(fig, run.path, "kv_query_components")


def correlation_figure(found: dict[str, Tensor], run: RunDir) -> None:
    fig, axes = new_figure(10.0, 3.6, ncols=2)
    for ax, (name, label) in zip(axes, (("rho_knorm", "K-norm"), ("rho_qfilters", "Q-Filters"))):
        layer_head_heatmap(fig, ax, found[name], f"Spearman rho: {label} score vs attention received",
                           cmap="coolwarm", vmin=-1, vmax=1)
    save_figure(fig, run.path, "kv_score_attention_spearman")


def run(model: nn.Module, chunks: Tensor, cfg: Any, run_dir: RunDir) -> dict[str, float]:
    """Tables `geometry` (layer, head, ...), `query_components` (component, mean |E<q, v_m>|); Figs. 4.30, 4.40."""
    if not 1 <= cfg.calibration_chunks <= len(chunks):
        raise ConfigError(f"method.qk_geometry.calibration_chunks must lie in [1, {len(chunks)}]; "
                          f"got {cfg.calibration_chunks}")
    queries = sample_queries(model, chunks[: cfg.calibration_chunks].split(1), cfg.num_samples, cfg.seed).queries
    per_head = [[head_geometry(head, cfg.sign_rule) for head in layer] for layer in queries]
    directions = torch.stack([torch.stack([h["direction"] for h in layer]) for layer in per_head])
    found = key_statistics(model, chunks, directions)
    n_layers, n_heads = found["rho_knorm"].shape
    groups = n_heads // model.config.num_key_value_heads
    rows = []
    for l in range(n_layers):
        for h in range(n_heads):
            head = per_head[l][h]
            rows.append({"layer": l, "head": h, "kv_head": h // groups,
                         "explained_first": float(head["explained_first"]), "kappa": float(head["kappa"]),
                         "query_positive_fraction": float(head["query_positive_fraction"]),
                         "first_component_abs_mean": float(head["component_abs_mean"][0]),
                         "max_other_component_abs_mean": float(head["component_abs_mean"][1:].max()),
                         "key_mean_projection": float(found["key_mean_projection"][l, h]),
                         "epsilon": 1 if found["key_mean_projection"][l, h] > 0 else -1,
                         **{name: float(found[name][l, h]) for name in ("key_sign_consistency", "rho_qfilters", "rho_knorm")}})
    table = pd.DataFrame(rows)
    run_dir.write_table("geometry", rows)
    curve = torch.stack([h["component_abs_mean"] for layer in per_head for h in layer]).mean(0)
    run_dir.write_table("query_components", [{"component": m + 1, "mean_abs_projection": float(v)} for m, v in enumerate(curve)])
    heads = [(int(layer), int(head)) for layer, head in cfg.show_heads]
    for layer, head in heads:
        if not (0 <= layer < n_layers and 0 <= head < n_heads):
            raise ConfigError(f"method.qk_geometry.show_heads holds ({layer}, {head}); the model has {n_layers} "
                              f"layers x {n_heads} heads")
    projection_figure(queries, directions, found["first_chunk_projections"], heads, run_dir)
    component_figure(curve, run_dir)
    correlation_figure(found, run_dir)
    return {"qk_geometry/explained_first": float(table.explained_first.mean()),
            "qk_geometry/query_positive_fraction": float(table.query_positive_fraction.mean()),
            "qk_geometry/epsilon_negative_share": float((table.epsilon < 0).mean()),
            "qk_geometry/key_sign_consistency": float(table.key_sign_consistency.mean()),
            "qk_geometry/rho_qfilters": float(table.rho_qfilters.mean()),
            "qk_geometry/rho_knorm": float(table.rho_knorm.mean())}

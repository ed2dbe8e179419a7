"""Sparse BOS keys and what their peaked dimensions do (thesis 4.1.4, Figs. 4.8, 4.9, 4.29).

Fig. 4.8 / 4.29: the key projection (W_K h, before RoPE, k_norm included where the model has one) of
the BOS token has a few peaked dimensions while other tokens spread their activation. Per (layer, KV
head, dim): the BOS activation (signed and absolute; BOS sits at position 0 and sees only itself, so
its key is the same in every chunk) and the mean |k| of the other tokens, averaged over chunks. The
peaked dimensions of a head are the `n_peaked` largest |k_BOS| (the thesis names ~3: ~50, ~56, ~120).

Fig. 4.9 ("we are setting the values at iteration 5"): the first `iteration` tokens are prefilled, then
the cached BOS key of every layer is edited, then the rest of the chunk is read on that cache, so every
later token attends to (and is built from) the edited key. Conditions: `none`, `peaked` (the peaked
dims of each KV head zeroed) and `random` (as many dims, drawn among the others, zeroed). Per (layer,
head): the attention the later queries pay to BOS, and the total variation distance between their
attention rows and the unedited ones (mean over queries of 1/2 sum |A - A_none|).
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import torch
from torch import Tensor, nn
from transformers import DynamicCache

from thesis.core.errors import ConfigError
from thesis.core.evaluate import progress
from thesis.core.plotting import new_figure, save_figure
from thesis.core.rundir import RunDir
from thesis.kvcache.analysis.capture import LayerPass, forward_layers
from thesis.kvcache.queries import pre_rope_keys

CONDITIONS = ("none", "random", "peaked")


def zero_key_dims(keys: Tensor, position: int, dims: Tensor) -> Tensor:
    """A copy of keys (batch, kv_heads, n, d) with dims[h] (kv_heads, k) of head h zeroed at `position` only."""
    mask = torch.zeros(keys.shape[1], keys.shape[-1], dtype=torch.bool, device=keys.device)
    mask.scatter_(1, dims.to(keys.device), True)
    edited = keys.clone()
    edited[:, :, position] = edited[:, :, position].masked_fill(mask, 0)
    return edited


def peaked_dims(bos_abs: Tensor, n_peaked: int) -> Tensor:
    """(..., n_peaked) dims of largest |k_BOS|, largest first."""
    return bos_abs.topk(n_peaked, dim=-1).indices


def random_dims(peaked: Tensor, head_dim: int, generator: torch.Generator) -> Tensor:
    """As many dims as `peaked` (..., k) per head, drawn uniformly among the dims not in it."""
    flat = peaked.reshape(-1, peaked.shape[-1])
    drawn = []
    for row in flat:
        others = torch.tensor([d for d in range(head_dim) if d not in set(row.tolist())])
        drawn.append(others[torch.randperm(len(others), generator=generator)[: row.numel()]])
    return torch.stack(drawn).view_as(peaked)


@torch.no_grad()
def key_activations(model: nn.Module, chunks: Tensor) -> dict[str, Tensor]:
    """Chunk means (layers, kv_heads, d): `bos` (signed), `bos_abs`, `others_abs`."""
    sums: dict[str, Tensor] = {}
    for chunk in progress(chunks, desc="key activations"):
        keys = torch.stack([pre_rope_keys(layer.module, layer.hidden_states)[0].float().cpu() for layer in forward_layers(model, chunk[None])])
        found = {"bos": keys[:, :, 0], "bos_abs": keys[:, :, 0].abs(), "others_abs": keys[:, :, 1:].abs().mean(2)}
        for name, value in found.items():
            sums[name] = sums.get(name, 0) + value
    return {name: value / len(chunks) for name, value in sums.items()}


@torch.no_grad()
def read_with_edit(model: nn.Module, chunk: Tensor, iteration: int, dims: Tensor | None) -> list[LayerPass]:
    """Read the first `iteration` tokens, zero `dims` (layers, kv_heads, k) of every layer's cached BOS key
    (none when None), read the rest; the per-layer passes of the rest, whose keys include the edited BOS."""
    cache = DynamicCache(config=model.config)
    forward_layers(model, chunk[None, :iteration], cache)
    if dims is not None:
        for index, layer in enumerate(cache.layers):
            layer.keys = zero_key_dims(layer.keys, 0, dims[index])
    return forward_layers(model, chunk[None, iteration:], cache)


def zeroing_effects(model: nn.Module, chunks: Tensor, iteration: int, dims: dict[str, Tensor | None],
                    show: tuple[int, int]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Chunk means (layers, heads, 2) of [attention to BOS, TV distance to `none`] per condition, and the
    first chunk's (n - iteration, n) attention map of the `show` (layer, head) per condition. Attention
    is formed one layer at a time, so memory holds one layer's maps per condition."""
    sums: dict[str, Tensor] = {}
    maps: dict[str, Tensor] = {}
    for number, chunk in enumerate(progress(chunks, desc="zeroing BOS dims")):
        passes = {name: read_with_edit(model, chunk, iteration, condition) for name, condition in dims.items()}
        per_layer: dict[str, list[Tensor]] = {name: [] for name in dims}
        for index, unedited in enumerate(passes["none"]):
            reference = unedited.attention()[0].float()
            for name, layers in passes.items():
                edited = layers[index].attention()[0].float()
                per_layer[name].append(torch.stack([edited[..., 0].mean(-1),
                                                    0.5 * (edited - reference).abs().sum(-1).mean(-1)], -1).cpu())
                if number == 0 and index == show[0]:
                    maps[name] = edited[show[1]].cpu()
        for name, rows in per_layer.items():
            sums[name] = sums.get(name, 0) + torch.stack(rows)
    return {name: value / len(chunks) for name, value in sums.items()}, maps


def activation_figure(table: pd.DataFrame, layer: int, kv_head: int, run: RunDir) -> None:
    part = table[(table.layer == layer) & (table.kv_head == kv_head)].sort_values("dim")
    fig, ax = new_figure(6.0, 3.2)
    ax.plot(part.dim, part.bos, label="BOS token")
    ax.plot(part.dim, part.others_abs, label="other tokens (mean |k|)")
    ax.set_xlabel("key dimension")
    ax.set_ylabel("activation")
    ax.set_title(f"key projection, layer {layer}, KV head {kv_head}")
    ax.legend(fontsize=7)
    save_figure(fig, run.path, "kv_key_activations_bos")


TITLES = {"none": "BOS key unedited", "random": "random dims of the BOS key zeroed",
          "peaked": "peaked dims of the BOS key zeroed"}


def maps_figure(maps: dict[str, Tensor], layer: int, head: int, iteration: int, run: RunDir) -> None:
    fig, axes = new_figure(10.0, 3.4, ncols=len(maps))
    for ax, (name, image) in zip(axes, maps.items()):
        image = image.numpy()
        ax.imshow(image, aspect="auto", cmap="viridis", vmin=0, vmax=float(maps["none"].max()),
                  extent=(-0.5, image.shape[1] - 0.5, iteration + image.shape[0] - 0.5, iteration - 0.5))
        ax.set_title(f"{TITLES[name]}\nlayer {layer}, head {head}", fontsize=8)
        ax.set_xlabel("key position")
    axes[0].set_ylabel("query position")
    save_figure(fig, run.path, "kv_zeroing_attention_maps")


def check_head(pair: Any, n_layers: int, n_heads: int, key: str) -> tuple[int, int]:
    layer, head = (int(x) for x in pair)
    if not (0 <= layer < n_layers and 0 <= head < n_heads):
        raise ConfigError(f"method.key_sparsity.{key} holds ({layer}, {head}); the model has {n_layers} layers x "
                          f"{n_heads} heads")
    return layer, head


def run(model: nn.Module, chunks: Tensor, cfg: Any, run_dir: RunDir) -> dict[str, float]:
    """Tables `key_activations`, `peaked_dims`, `zeroing`; figures for 4.8/4.29 and 4.9."""
    zeroing = cfg.zeroing
    if not 1 <= zeroing.iteration < chunks.shape[1]:
        raise ConfigError(f"method.key_sparsity.zeroing.iteration must lie in [1, {chunks.shape[1] - 1}]; "
                          f"got {zeroing.iteration}")
    acts = key_activations(model, chunks)
    n_layers, n_kv, head_dim = acts["bos"].shape
    if not 1 <= cfg.n_peaked < head_dim:
        raise ConfigError(f"method.key_sparsity.n_peaked must lie in [1, {head_dim - 1}]; got {cfg.n_peaked}")
    table = pd.DataFrame([{"layer": l, "kv_head": h, "dim": d, **{k: float(v[l, h, d]) for k, v in acts.items()}}
                          for l in range(n_layers) for h in range(n_kv) for d in range(head_dim)])
    run_dir.write_table("key_activations", table.to_dict("records"))
    peaked = peaked_dims(acts["bos_abs"], cfg.n_peaked)
    run_dir.write_table("peaked_dims", [{"layer": l, "kv_head": h, "rank": r, "dim": int(peaked[l, h, r]),
                                         "bos_abs": float(acts["bos_abs"][l, h, peaked[l, h, r]]),
                                         "others_abs": float(acts["others_abs"][l, h, peaked[l, h, r]])}
                                        for l in range(n_layers) for h in range(n_kv) for r in range(cfg.n_peaked)])
    activation_figure(table, *check_head(cfg.show, n_layers, n_kv, "show"), run_dir)
    generator = torch.Generator().manual_seed(int(zeroing.seed))
    dims = {"none": None, "random": random_dims(peaked, head_dim, generator), "peaked": peaked}
    n_heads = model.config.num_attention_heads
    show = check_head(zeroing.show, n_layers, n_heads, "zeroing.show")
    effects, maps = zeroing_effects(model, chunks[: zeroing.chunks], zeroing.iteration, dims, show)
    run_dir.write_table("zeroing", [{"layer": l, "head": h, "condition": name, "bos_attention": float(v[l, h, 0]),
                                     "tv_distance": float(v[l, h, 1])}
                                    for name, v in effects.items() for l in range(n_layers) for h in range(n_heads)])
    maps_figure(maps, *show, zeroing.iteration, run_dir)
    bos_energy = acts["bos"].pow(2)
    peak_share = bos_energy.gather(-1, peaked).sum(-1) / bos_energy.sum(-1)
    metrics = {"key_sparsity/bos_peak_energy_share": float(peak_share.mean()),
               "key_sparsity/bos_to_others_abs": float((acts["bos_abs"].mean(-1) / acts["others_abs"].mean(-1)).mean())}
    for name, value in effects.items():
        metrics[f"key_sparsity/{name}/bos_attention"] = float(value[..., 0].mean())
        metrics[f"key_sparsity/{name}/tv_distance"] = float(value[..., 1].mean())
    return metrics

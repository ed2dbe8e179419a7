"""Runner of `kv_ea_reconstruction` (thesis 4.3.6, Fig. 4.46): how far each press moves the model's states.

Each sequence of the data task (a ~5K-token text: `context_length` prefix tokens + `continuation_length`)
is run twice per press x ratio, as in the miniature's M4 (`mini/reconstruction.py`, reused): the prefix
is prefilled (compressed once under the press, or whole), then the continuation is run on that cache,
and its states are compared with those of the uncompressed run, per layer: the mean over continuation
tokens of ||h - h_compr||_2. `method.target` picks which states:
- `residual` (default, thesis: "the reconstruction error of the residual stream ... ||h - h_compr||"):
  the hidden states after each decoder layer;
- `attention_output`: the output of each layer's self-attention (sum_i a_ti W_o v_i of eq. 4.10),
  the term the eviction changes directly.
The figure averages over layers: rows with `layer` = "mean" hold that average.

"Optimal" (the figure's reference; thesis silent on its definition): `FutureAttentionPress` keeps, per
layer and KV head, the prefix pairs with the largest a_ti ||v_i|| (eq. 4.11 with ||v|| for ||W_o v||, as
the EA experiments, E.11) averaged over the continuation's true queries t, taken from the uncompressed
run, softmax over the prefix keys, mean over the query heads sharing the KV head. It knows the future,
so it is an oracle for the score, not a proof of minimal error. Enabled with `method.oracle: true`.

Writes `tables/reconstruction.csv` (press, ratio, target, layer, error, achieved_ratio); metrics
`<press>/<ratio>/error` (mean over layers and sequences).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn
from transformers.cache_utils import CacheLayerMixin

from thesis.core.errors import ConfigError
from thesis.core.evaluate import progress
from thesis.core.hardware import device_of
from thesis.core.rundir import RunDir
from thesis.kvcache.mini.reconstruction import continuation_states
from thesis.kvcache.headwise_cache import HeadwiseLayer
from thesis.kvcache.press import Press, PressBase, decoder
from thesis.kvcache.queries import group_mean, post_rope_queries
from thesis.kvcache.runner import build_press, load_model
from thesis.kvcache.tasks.base import PerplexityTask

TARGETS = ("residual", "attention_output")


@dataclass(frozen=True)
class ContinuationRun:
    """States of the continuation tokens, per layer: (layers, batch, m, hidden) each, the post-RoPE
    queries (batch, heads, m, head_dim) of every layer, and the KV pairs the cache held for the prefix
    (summed over layers, batch and KV heads) when the continuation came."""

    residual: Tensor
    attention_output: Tensor
    queries: list[Tensor]
    prefix_pairs: int


@torch.no_grad()
def continuation_run(model: nn.Module, prefix: Tensor, continuation: Tensor,
                     press: PressBase | None) -> ContinuationRun:
    """`mini.reconstruction.continuation_states` with each attention layer's output and queries recorded
    on its last call (the continuation's)."""
    layers = decoder(model).layers
    queries: dict[int, Tensor] = {}
    outputs: dict[int, Tensor] = {}
    stored: dict[int, int] = {}

    def record_queries(module, args, kwargs):
        queries[module.layer_idx] = post_rope_queries(module, kwargs["hidden_states"], kwargs["position_embeddings"])
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        layer = cache.layers[module.layer_idx] if cache is not None and module.layer_idx < len(cache.layers) else None
        stored[module.layer_idx] = layer_entries(layer) if layer is not None and layer.is_initialized else 0

    def record_output(module, args, kwargs, output):
        outputs[module.layer_idx] = output[0].float()

    handles = [hook for layer in layers for hook in (
        layer.self_attn.register_forward_pre_hook(record_queries, with_kwargs=True),
        layer.self_attn.register_forward_hook(record_output, with_kwargs=True))]
    try:
        residual = continuation_states(model, prefix, continuation, press)
    finally:
        for handle in handles:
            handle.remove()
    return ContinuationRun(residual, torch.stack([outputs[i] for i in range(len(layers))]),
                           [queries[i] for i in range(len(layers))], sum(stored.values()))


def layer_entries(layer: CacheLayerMixin) -> int:
    """KV pairs stored in one cache layer (batch x KV heads x length, or a head-wise layer's count)."""
    return layer.entries() if isinstance(layer, HeadwiseLayer) else layer.keys[..., 0].numel()


def layer_errors(reference: Tensor, compressed: Tensor) -> Tensor:
    """(layers,) mean over batch and tokens of ||reference - compressed||_2."""
    return (reference - compressed).norm(dim=-1).mean(dim=(1, 2)).cpu()


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


def evaluate_reconstruction(cfg: DictConfig, run: RunDir) -> dict[str, float]:
    target = cfg.method.target
    if target not in TARGETS:
        raise ConfigError(f"method.target must be one of {TARGETS}; got {target!r}")
    model, tokenizer = load_model(cfg.model, device_of(cfg.hardware))
    task = instantiate(cfg.data.task)
    if not isinstance(task, PerplexityTask):
        raise ConfigError("data.task must be a perplexity task (sequences of prefix + continuation tokens)")
    sequences = [(ids[:, :task.context_length], ids[:, task.context_length:]) for ids in task.sequences(tokenizer)]
    references = [continuation_run(model, prefix, continuation, None) for prefix, continuation in sequences]
    names = list(cfg.method.presses) + (["optimal"] if cfg.method.oracle else [])
    filters: dict[str, Tensor] = {}
    errors: dict[tuple[str, float], list[Tensor]] = defaultdict(list)
    achieved: dict[tuple[str, float], list[float]] = defaultdict(list)
    settings = [(name, ratio) for name in names for ratio in cfg.method.compression_ratios]
    for name, ratio in progress(settings, desc="presses x ratios"):
        if name != "optimal":
            press = build_press(OmegaConf.to_container(cfg.method.presses[name], resolve=True), ratio, model, filters)
        for (prefix, continuation), reference in zip(sequences, references):
            if name == "optimal":
                press = FutureAttentionPress(compression_ratio=ratio, future_queries=reference.queries)
            compressed = continuation_run(model, prefix, continuation, press)
            errors[name, ratio].append(layer_errors(getattr(reference, target), getattr(compressed, target)))
            achieved[name, ratio].append(1 - compressed.prefix_pairs / reference.prefix_pairs)
    rows, metrics = [], {}
    for (name, ratio), per_sequence in errors.items():
        per_layer = torch.stack(per_sequence).mean(dim=0)
        ratio_achieved = sum(achieved[name, ratio]) / len(achieved[name, ratio])
        for layer, error in [*enumerate(per_layer.tolist()), ("mean", float(per_layer.mean()))]:
            rows.append({"press": name, "ratio": ratio, "target": target, "layer": layer, "error": error,
                         "achieved_ratio": ratio_achieved})
        metrics[f"{name}/{ratio:g}/error"] = float(per_layer.mean())
    run.write_table("reconstruction", rows)
    return metrics

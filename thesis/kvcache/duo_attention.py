"""DuoAttention as a prefill press (thesis 4.3 baselines, Figs. 4.43 and 4.51; spec C.3, D).

DuoAttention splits the KV heads into retrieval heads, which keep their whole cache, and streaming
heads, which keep only the first `sink_size` and the last `recent_size` positions. Which heads
stream comes from a score per (layer, KV head): the `compression_ratio` fraction of heads with the
lowest scores (as kvpress's `DuoAttentionPress`, whose `head_compression_ratio` the thesis's sweeps
set to the compression ratio). The ratio actually removed is therefore lower than the nominal one,
streaming fraction x (1 - (sink + recent) / n), and is what the cache statistics report.

Head scores come from one of two sources:
- the DuoAttention authors' trained gates, a folder of their `attn_patterns` release holding
  `config.json` (`sink_size`, `recent_size`) and `full_attention_heads.tsv` (layers x KV heads,
  clipped to [0, 1]); `read_attention_patterns`;
- kvpress's on-the-fly estimate (`on_the_fly_head_scores`, sink 128, recent 256): per layer the
  mean query and mean key of some text, each repeated `q_len` times and rotated at positions
  0..q_len-1; the last query's attention over those keys, cumulated along the positions and averaged
  (the area under the cumulated attention curve), then averaged over the query heads of a KV head
  and over the texts. Heads that attend mostly to recent positions score lowest and stream.

kvpress keeps every pair and hides the streaming heads' middle keys at attention time; here they
are removed (a `HeadwiseLayer`), so the cache shrinks by the realised ratio.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from transformers.cache_utils import CacheLayerMixin

from thesis.kvcache.headwise_cache import HeadwiseLayer
from thesis.kvcache.press import PressBase, decoder
from thesis.kvcache.queries import pre_rope_keys, pre_rope_queries, rotate_half

PATTERN_FILES = ("config.json", "full_attention_heads.tsv")
ON_THE_FLY_SINK, ON_THE_FLY_RECENT = 128, 256


@dataclass(frozen=True)
class HeadPatterns:
    """What a DuoAttention press needs: the streaming window and one score per (layer, KV head)."""

    sink_size: int
    recent_size: int
    head_scores: Tensor


def read_attention_patterns(folder: str | Path) -> HeadPatterns:
    """The authors' patterns of one model: `<folder>/config.json` and `<folder>/full_attention_heads.tsv`."""
    folder = Path(folder)
    missing = [name for name in PATTERN_FILES if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"DuoAttention patterns folder {folder} lacks {', '.join(missing)}; copy the model's folder of "
            "attn_patterns/ from the DuoAttention release (github.com/mit-han-lab/duo-attention) there.")
    config = json.loads((folder / "config.json").read_text())
    for key in ("sink_size", "recent_size"):
        if key not in config:
            raise ValueError(f"{folder / 'config.json'} has no {key!r}; keys: {sorted(config)}")
    scores = np.loadtxt(folder / "full_attention_heads.tsv", dtype=np.float64, delimiter="\t", ndmin=2)
    return HeadPatterns(int(config["sink_size"]), int(config["recent_size"]),
                        torch.from_numpy(np.clip(scores, 0.0, 1.0)))


def _constant_rotated(vector: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """(heads, d) -> (heads, q_len, d): the same vector at every position, rotated there."""
    repeated = vector[:, None, :].expand(-1, cos.shape[0], -1)
    return repeated * cos + rotate_half(repeated) * sin


@torch.no_grad()
def on_the_fly_head_scores(model: nn.Module, batches: Iterable[Tensor], q_len: int = 500) -> Tensor:
    """(layers, kv_heads) kvpress's experimental DuoAttention scores from token id rows (module docstring)."""
    stack = decoder(model)
    config = model.config
    device = next(model.parameters()).device
    scores = torch.zeros(config.num_hidden_layers, config.num_key_value_heads, dtype=torch.float64)
    rows = [row for batch in batches for row in batch.reshape(-1, batch.shape[-1])]
    if not rows:
        raise ValueError("on_the_fly_head_scores needs at least one row of token ids")
    positions = torch.arange(q_len, device=device)[None]
    for row in rows:
        hidden = model(input_ids=row[None].to(device), output_hidden_states=True).hidden_states[:-1]
        for layer_idx, states in enumerate(hidden):
            layer = stack.layers[layer_idx]
            attention = layer.self_attn
            d = attention.head_dim
            states = layer.input_layernorm(states)
            queries, keys = pre_rope_queries(attention, states)[0], pre_rope_keys(attention, states)[0]
            cos, sin = (t[0] for t in stack.rotary_emb(states, positions))
            q = _constant_rotated(queries.mean(dim=1), cos, sin)
            k = _constant_rotated(keys.mean(dim=1), cos, sin)
            k = k.repeat_interleave(attention.num_key_value_groups, dim=0)
            logits = (q[:, -1:, :] @ k.transpose(1, 2))[:, 0] / d ** 0.5
            weights = logits.softmax(dim=-1, dtype=torch.float32)
            area = weights.cumsum(dim=-1).mean(dim=-1)
            scores[layer_idx] += area.view(-1, attention.num_key_value_groups).mean(dim=1).double().cpu()
    return scores / len(rows)


def head_patterns(source: Any, model: nn.Module) -> HeadPatterns:
    """Patterns from a config source: a folder of the authors' release, or `{random_sequences, length}`
    token ids (seed 0) for the on-the-fly estimate, optionally with `q_len` (default 500) and the
    streaming window (`sink_size`, `recent_size`; kvpress's 128 and 256 by default)."""
    if isinstance(source, (str, Path)):
        return read_attention_patterns(source)
    if isinstance(source, Mapping) and {"random_sequences", "length"} <= set(source):
        generator = torch.Generator().manual_seed(0)
        ids = torch.randint(0, model.config.vocab_size, (source["random_sequences"], source["length"]),
                            generator=generator)
        scores = on_the_fly_head_scores(model, [ids], q_len=source.get("q_len", 500))
        return HeadPatterns(int(source.get("sink_size", ON_THE_FLY_SINK)),
                            int(source.get("recent_size", ON_THE_FLY_RECENT)), scores)
    raise ValueError(f"DuoAttention `patterns` must be a folder of the authors' attn_patterns release or "
                     f"{{random_sequences, length}}; got {source!r}")


def streaming_heads(head_scores: Tensor, fraction: float) -> Tensor:
    """(layers, kv_heads) bool: the round(fraction x heads) heads with the lowest scores."""
    count = round(head_scores.numel() * fraction)
    mask = torch.zeros(head_scores.numel(), dtype=torch.bool)
    mask[torch.argsort(head_scores.flatten(), stable=True)[:count]] = True
    return mask.view(head_scores.shape)


@dataclass
class DuoAttentionPress(PressBase):
    """Retrieval heads keep everything; streaming heads keep their sink and recent window."""

    compression_ratio: float = 0.0     # fraction of KV heads that stream (kvpress's head_compression_ratio)
    head_scores: Tensor | None = field(default=None, repr=False)
    sink_size: int = ON_THE_FLY_SINK
    recent_size: int = ON_THE_FLY_RECENT
    streaming: Tensor | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if not 0 <= self.compression_ratio <= 1:
            raise ValueError(f"compression_ratio is the fraction of streaming heads, in [0, 1]; "
                             f"got {self.compression_ratio}.")
        if self.sink_size < 0 or self.recent_size < 0:
            raise ValueError(f"sink_size and recent_size count positions; got {self.sink_size}, {self.recent_size}.")

    def attach(self, model: nn.Module) -> None:
        config = model.config
        expected = (config.num_hidden_layers, config.num_key_value_heads)
        if self.head_scores is None or tuple(self.head_scores.shape) != expected:
            got = None if self.head_scores is None else tuple(self.head_scores.shape)
            raise ValueError(f"DuoAttentionPress needs head scores of shape (layers, kv_heads) = {expected} for this "
                             f"model; got {got}. Read the authors' patterns (read_attention_patterns) or estimate "
                             "them (on_the_fly_head_scores).")
        self.streaming = streaming_heads(self.head_scores, self.compression_ratio)

    def kept(self, layer_idx: int, keys: Tensor) -> Tensor | None:
        """(batch, kv_heads, n) bool of the kept positions, None when the layer keeps everything."""
        n = keys.shape[-2]
        heads = self.streaming[layer_idx].to(keys.device)
        if not bool(heads.any()) or n <= self.sink_size + self.recent_size:
            return None
        window = torch.arange(n, device=keys.device)
        window = (window < self.sink_size) | (window >= n - self.recent_size)
        return (window[None, :] | ~heads[:, None]).expand(keys.shape[0], -1, -1)

    def compress_layer(self, module: nn.Module, hidden_states: Tensor, layer: CacheLayerMixin,
                       attentions: Tensor | None, kwargs: dict[str, Any]) -> CacheLayerMixin:
        if isinstance(layer, HeadwiseLayer):
            raise ValueError("DuoAttentionPress cannot compress a head-wise cache twice; use it once.")
        if self.streaming is None:
            raise RuntimeError("DuoAttentionPress was not attached to a model; use it as `with press(model): ...`")
        keep = self.kept(module.layer_idx, layer.keys)
        if keep is None:
            return layer
        return HeadwiseLayer.from_kept(layer.keys, layer.values, keep)

"""Full attention maps only at the denoising steps around sink moves (Figs. 5.53 / 5.55 / 5.57).

Holding every S x S map of every step, layer and head is out of reach for a 7-8B model (32 layers x
32 heads x S^2 per step), so the analysis runs in two passes over the same deterministic (greedy)
decoding: the first keeps only top scores (`SinkCapture`) and finds where the main sink of a head
moves, appears or vanishes; the second replays the decoding under `MoveMapCapture`, which keeps the
maps of the chosen (layer, head) pairs at the requested steps only, plus those heads' column scores
at every step (S floats per step, Fig. 5.50). Outputs are the original function's, so the replay
decodes like the first pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch

from thesis.core.errors import ConfigError
from thesis.sinks.capture import SdpaInterceptor, explicit_attention
from thesis.sinks.detection import Score, key_scores

EVENT_KINDS = ("move", "appear", "vanish")


def sink_events(positions: Sequence[int | None], kinds: Sequence[str] = EVENT_KINDS) -> list[dict]:
    """Steps t where the main sink (position or None per step) changes between t and t + 1."""
    unknown = set(kinds) - set(EVENT_KINDS)
    if unknown:
        raise ConfigError(f"sink event kinds {sorted(unknown)} are unknown: use {', '.join(EVENT_KINDS)}")
    events = []
    for step, (before, after) in enumerate(zip(positions[:-1], positions[1:])):
        kind = ("move" if before is not None and after is not None and before != after else
                "appear" if before is None and after is not None else
                "vanish" if before is not None and after is None else None)
        if kind in kinds:
            events.append({"step": step, "kind": kind, "from": before, "to": after})
    return events


@dataclass
class MoveMapCapture(SdpaInterceptor):
    """Keep attention maps of `heads` ((layer, head) pairs) at `map_steps` and their column scores at
    every step, for batch row 0; nothing else. Layers are numbered by call order after `begin_step`."""

    heads: Sequence[tuple[int, int]]
    map_steps: set[int]
    score: Score = "colsum"
    maps: dict[tuple[int, int, int], torch.Tensor] = field(default_factory=dict)  # (step, layer, head) -> (S, S)
    scores: dict[tuple[int, int, int], torch.Tensor] = field(default_factory=dict)  # (step, layer, head) -> (S,)

    def __post_init__(self) -> None:
        self._layers = {layer for layer, _ in self.heads}

    def _attention(self, query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                   enable_gqa=False):
        if self._layer in self._layers:
            with torch.no_grad():
                wanted = [head for layer, head in self.heads if layer == self._layer]
                first_mask = attn_mask[:1] if attn_mask is not None and attn_mask.dim() == 4 else attn_mask
                probabilities = explicit_attention(query[:1], key[:1], first_mask, is_causal, scale)[0]
                for head in wanted:
                    where = (self._step, self._layer, head)
                    self.scores[where] = key_scores(probabilities[head], self.score).cpu()
                    if self._step in self.map_steps:
                        self.maps[where] = probabilities[head].cpu()
        self._layer += 1
        return self._original(query, key, value, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal,
                              scale=scale, enable_gqa=enable_gqa)

"""FastGen-lite (thesis Sec. 4.1, Fig. 4.6; spec A.1, D, G `fastgen_lite`): the attention-free part of
FastGen [254], the baseline KNorm is compared with in language modelling.

FastGen picks, per head, a mix of policies (special tokens, punctuation, local window, frequency)
from the prompt's attention maps. The thesis keeps it attention-free, to compare on equal terms with
KNorm: "we only consider local, punctuation and special tokens". Protected token ids are, as in the
KNorm authors' script, the tokenizer's special tokens plus every vocabulary entry that is a single
punctuation character of [.,!?:;-()[]{}"'/\\].

Score per cached pair (higher = keep), in positional slot order: 2 for a special token, 1 for a
punctuation token, 0 otherwise, plus slot / n (the recency of the slot in the cache). Under a budget
of k pairs per KV head the press thus keeps special tokens first, then punctuation, then the most
recent ("local") tokens, newest first within each tier. The priority order inside the union is not
stated in the thesis (proposal); the window is whatever the budget leaves after the protected tokens.

Token identities are not in the cache, so the press records the ids fed to the model (a hook on the
decoder stack) and, per cache layer, the absolute positions of the pairs it kept: after an eviction
the slots hold the kept positions followed by every position seen since. `with press(model)` and
`PruneAfterPress(press=FastGenLitePress(...))` install that hook (`recording`); other wrappers do not,
and scoring then fails with a message saying so.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from transformers import AutoTokenizer
from transformers.cache_utils import Cache

from thesis.kvcache.press import Press, _cache_argument, decoder, gather_positions, kept_indices

PUNCTUATION = re.compile(r"^[.,!?:;\-()\[\]{}\"'/\\]$")
SPECIAL, PUNCTUATION_TIER = 2.0, 1.0


def protected_token_ids(tokenizer: Any) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(special token ids, single-character punctuation token ids) of a tokenizer."""
    special = sorted(set(tokenizer.all_special_ids))
    punctuation = sorted(index for token, index in tokenizer.get_vocab().items() if PUNCTUATION.match(token))
    return tuple(special), tuple(punctuation)


@dataclass
class TokenRecord:
    """Ids fed to the model for one cache, and per layer the positions its slots held at the last eviction."""

    ids: Tensor  # (batch, tokens seen)
    kept: dict[int, Tensor] = field(default_factory=dict)  # layer -> (batch, kv_heads, m) absolute positions
    seen_at: dict[int, int] = field(default_factory=dict)  # layer -> tokens seen at that eviction


@dataclass
class FastGenLitePress(Press):
    """Keep special tokens, then punctuation, then the most recent tokens."""

    special_ids: tuple[int, ...] | None = None
    punctuation_ids: tuple[int, ...] | None = None
    tokenizer: str | None = None
    records: weakref.WeakKeyDictionary[Cache, TokenRecord] = field(
        default_factory=weakref.WeakKeyDictionary, init=False, repr=False)

    def attach(self, model: nn.Module) -> None:
        """Read the protected ids from the model's tokenizer unless both lists were given."""
        if self.special_ids is None or self.punctuation_ids is None:
            special, punctuation = protected_token_ids(AutoTokenizer.from_pretrained(
                self.tokenizer or model.config.name_or_path))
            self.special_ids = special if self.special_ids is None else tuple(self.special_ids)
            self.punctuation_ids = punctuation if self.punctuation_ids is None else tuple(self.punctuation_ids)

    @contextmanager
    def recording(self, model: nn.Module) -> Iterator[None]:
        """Record the input ids of every forward call on a cache while the context is open."""

        def record(_module, args, kwargs):
            cache, ids = _cache_argument(kwargs), kwargs.get("input_ids")
            if cache is None:
                return
            if ids is None:
                raise ValueError("FastGenLitePress needs input_ids (not inputs_embeds) to know which tokens "
                                 "are protected.")
            known = self.records.get(cache)
            if known is None or cache.get_seq_length() == 0:
                self.records[cache] = TokenRecord(ids.detach().clone())
            else:
                known.ids = torch.cat([known.ids, ids.detach()], dim=1)

        handle = decoder(model).register_forward_pre_hook(record, with_kwargs=True)
        try:
            yield
        finally:
            handle.remove()

    @contextmanager
    def __call__(self, model: nn.Module) -> Iterator[nn.Module]:
        with self.recording(model), super().__call__(model):
            yield model

    def slot_positions(self, record: TokenRecord, layer_idx: int, keys: Tensor) -> Tensor:
        """(batch, kv_heads, n) absolute position held by each cached slot of the layer."""
        batch, heads, n = keys.shape[:3]
        kept = record.kept.get(layer_idx, keys.new_zeros((batch, heads, 0), dtype=torch.long))
        seen_at = record.seen_at.get(layer_idx, 0)
        new = torch.arange(seen_at, record.ids.shape[1], device=keys.device).expand(batch, heads, -1)
        positions = torch.cat([kept.to(keys.device), new], dim=-1)
        if positions.shape[-1] != n:
            raise RuntimeError(f"FastGenLitePress tracked {positions.shape[-1]} slots in layer {layer_idx}, the cache "
                               f"holds {n}: the cache was changed outside this press.")
        return positions

    def record_of(self, kwargs: dict[str, Any]) -> TokenRecord:
        record = self.records.get(_cache_argument(kwargs))
        if record is None:
            raise ValueError("FastGenLitePress saw no input ids for this cache: use it as `with press(model)` or "
                             "inside knorm.PruneAfterPress, which record them (DecodingPress does not).")
        return record

    def score(self, module: nn.Module, hidden_states: Tensor, keys: Tensor, values: Tensor,
              attentions: Tensor | None, kwargs: dict[str, Any]) -> Tensor:
        record = self.record_of(kwargs)
        positions = self.slot_positions(record, module.layer_idx, keys)
        ids = record.ids.to(keys.device)[:, None, :].expand(-1, keys.shape[1], -1).gather(2, positions)
        special = torch.isin(ids, torch.tensor(self.special_ids, dtype=ids.dtype, device=ids.device))
        punctuation = torch.isin(ids, torch.tensor(self.punctuation_ids, dtype=ids.dtype, device=ids.device))
        tier = torch.where(special, SPECIAL, torch.where(punctuation, PUNCTUATION_TIER, 0.0))
        recency = torch.arange(keys.shape[2], device=keys.device, dtype=torch.float32) / keys.shape[2]
        return tier + recency

    def compress(self, module: nn.Module, hidden_states: Tensor, keys: Tensor, values: Tensor,
                 attentions: Tensor | None, kwargs: dict[str, Any]) -> tuple[Tensor, Tensor]:
        """Press.compress, also remembering which positions the kept slots hold."""
        k = self.n_kept(keys.shape[-2])
        if k == keys.shape[-2] or not self.compresses_layer(module.layer_idx):
            return keys, values
        record = self.record_of(kwargs)
        indices = kept_indices(self.score(module, hidden_states, keys, values, attentions, kwargs), k)
        record.kept[module.layer_idx] = self.slot_positions(record, module.layer_idx, keys).gather(2, indices)
        record.seen_at[module.layer_idx] = record.ids.shape[1]
        return gather_positions(keys, indices), gather_positions(values, indices)

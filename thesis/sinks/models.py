"""`logits_of(ids)` for a transformers model, run causally or bidirectionally.

LLaDA-style networks are Llama-style transformers without the causal mask. transformers 5.x uses an
attention mask given as a 4D tensor as it is, so a boolean all-True (B, 1, S, S) mask turns any of
its causal LMs (here the tiny random Llama fixture) into a bidirectional model offline, with no
remote code; its `sdpa` attention then goes through `SinkCapture`.
"""

from __future__ import annotations

import torch
from torch import nn

from thesis.sinks.decoding import LogitsFn


def hf_logits_fn(model: nn.Module, bidirectional: bool, native_bidirectional: bool = False) -> LogitsFn:
    """`native_bidirectional`: the model attends both ways by itself (LLaDA's and Dream's own
    modelling code, which read `attention_mask` as a padding mask): no mask is passed."""

    def logits_of(ids: torch.Tensor) -> torch.Tensor:
        mask = None
        if bidirectional and not native_bidirectional:
            mask = torch.ones(ids.shape[0], 1, ids.shape[1], ids.shape[1], dtype=torch.bool, device=ids.device)
        if native_bidirectional:
            return model(input_ids=ids).logits
        return model(input_ids=ids, attention_mask=mask, use_cache=False).logits

    return logits_of

"""M4 of the miniature (spec F.b; thesis Fig. 4.46): how far a compressed prefix moves the residual stream.

A held-out prefix is prefilled with a press (compressed once), the next tokens are run on that cache,
and their hidden states after every layer are compared with those of the uncompressed run: the mean
over layers and tokens of ||h - h_compressed||_2.

The oracle ("optimal" of the figure) is `reconstruction_eval.FutureAttentionPress`: per layer and KV
head it keeps the prefix pairs with the largest a_ti ||v_i||, averaged over the continuation's true
post-RoPE queries of the uncompressed run. It knows the future; it is not a proof of minimal error.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from transformers import DynamicCache

from thesis.core.models import with_cache
from thesis.kvcache.press import Press, PressBase


@torch.no_grad()
def continuation_states(model: nn.Module, prefix: Tensor, continuation: Tensor, press: PressBase | None) -> Tensor:
    """(layers, batch, m, hidden) hidden states after each decoder layer for the continuation."""
    cache = DynamicCache(config=model.config)
    positions = torch.arange(prefix.shape[1], prefix.shape[1] + continuation.shape[1], device=model.device)[None]
    if press is None:
        model(input_ids=prefix.to(model.device), **with_cache(model, cache))
        out = model(input_ids=continuation.to(model.device), **with_cache(model, cache), position_ids=positions, output_hidden_states=True)
    else:
        with press(model):
            model(input_ids=prefix.to(model.device), **with_cache(model, cache))
            out = model(input_ids=continuation.to(model.device), **with_cache(model, cache), position_ids=positions,
                        output_hidden_states=True)
    return torch.stack(out.hidden_states[1:]).float()


def reconstruction_error(reference: Tensor, compressed: Tensor) -> Tensor:
    """(batch,) mean over layers and tokens of the L2 distance between hidden states."""
    return (reference - compressed).norm(dim=-1).mean(dim=(0, 2)).cpu()


def future_queries(model: nn.Module, prefix: Tensor, continuation: Tensor) -> list[Tensor]:
    """Per layer, the continuation's post-RoPE queries (batch, heads, m, head_dim) of the uncompressed run."""
    from thesis.kvcache.reconstruction_eval import continuation_run  # imported here: that module imports this one

    return continuation_run(model, prefix, continuation, None).queries


def oracle_press(queries: list[Tensor], ratio: float) -> Press:
    """The future-attention oracle at `ratio`, scoring with `queries` (from `future_queries`)."""
    from thesis.kvcache.reconstruction_eval import FutureAttentionPress  # imported here: that module imports this one

    return FutureAttentionPress(compression_ratio=ratio, future_queries=queries)

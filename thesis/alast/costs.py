"""Training FLOPs of a step as it actually ran: frozen blocks, no-grad prefix, dropped or merged tokens.

The core counter (`thesis.core.flops.FlopCounter`, 1 multiply-add = 1 FLOP) runs on a copy of the
model on PyTorch's `meta` device, part by part: the patch embedding, every block with the token
counts that entered and left it (and, for ToMe, the tokens it merged: the matching's similarity
product is priced too, the merged sequence shrinks the MLP and every later block), the head. Each part is run forward and, when the real step
needed it, backward, with the same parameters requiring gradients as in the real step and an
input that requires gradients exactly when the real input did. So a frozen block below the lowest
trainable one costs its forward only, a frozen block above it forward + input gradients, a
trainable one forward + input + weight gradients, and LoRA adapters are priced as they run.

Meta tensors have shapes and no data, so counting costs no arithmetic; results are cached by
(part, shapes, gradient flags), and only new combinations are counted. The sum equals the
counter run around the real step (tested), without slowing the timed training loop.
"""

from __future__ import annotations

import copy
from typing import Callable

import torch
from torch import Tensor, nn

from thesis.alast.tome import TokenSizes
from thesis.alast.vit import ForwardRecord, SelectiveViT, run_block
from thesis.core.flops import FlopCounter


def _grad_flags(module: nn.Module) -> tuple[bool, ...]:
    return tuple(p.requires_grad for p in module.parameters())


def _set_grad_flags(module: nn.Module, flags: tuple[bool, ...]) -> None:
    for p, flag in zip(module.parameters(), flags):
        p.requires_grad_(flag)


class StepFlops:
    """Counts the FLOPs of training steps of `model` from their `ForwardRecord`s."""

    def __init__(self, model: SelectiveViT):
        self.model = model
        self.meta = copy.deepcopy(model).to("meta")
        self.cache: dict[tuple, int] = {}

    def _count(self, key: tuple, module: nn.Module, flags: tuple[bool, ...], run: Callable[[], Tensor]) -> int:
        if key not in self.cache:
            _set_grad_flags(module, flags)
            with torch.enable_grad(), FlopCounter(module) as counter:
                out = run()
                if out.requires_grad:
                    out.backward(torch.ones_like(out))
            self.cache[key] = counter.report.total
        return self.cache[key]

    def _input(self, shape: tuple[int, ...], grad: bool) -> Tensor:
        return torch.empty(shape, device="meta", requires_grad=grad)

    def _sizes(self, sized: bool, batch: int, tokens: int) -> TokenSizes:
        """Token sizes as the block saw them: meta ones after a merge (their values cost no products)."""
        return TokenSizes(torch.ones(batch, tokens, 1, device="meta") if sized else None)

    def step(self, images_shape: tuple[int, ...], record: ForwardRecord) -> int:
        """FLOPs of one forward + backward with a batch of `images_shape` as described by `record`."""
        real, meta = self.model.vit, self.meta.vit
        batch, width = images_shape[0], real.embed_dim
        prefix = real.num_prefix_tokens
        stem_flags = tuple(p.requires_grad for n, p in real.named_parameters() if not n.startswith(("blocks.", "norm.", "head", "fc_norm")))
        total = self._count(("stem", images_shape, stem_flags), meta, _grad_flags(real),
                            lambda: self.meta.embed(self._input(images_shape, False)))
        for l, (block, meta_block) in enumerate(zip(real.blocks, meta.blocks)):
            n_in, n_out, grad = record.tokens_in[l], record.tokens_out[l], record.input_grad[l]
            merged = record.merged[l] if record.merged else 0
            sized = bool(record.sized and record.sized[l])
            flags = _grad_flags(block)
            key = ("block", l, batch, n_in, n_out, merged, sized, grad, flags)
            total += self._count(key, meta_block, flags, lambda: run_block(
                meta_block, self._input((batch, n_in, width), grad), n_out - prefix, prefix, self.model.drop_at,
                self._sizes(sized, batch, n_in), merged))
        n_last = record.tokens_out[-1]
        head_flags = _grad_flags(real)
        total += self._count(("head", batch, n_last, record.head_input_grad, head_flags), meta, head_flags,
                             lambda: self.meta.classify(self._input((batch, n_last, width), record.head_input_grad)))
        return total

"""FLOPs counting with one multiply-add = one FLOP (the fvcore / ACM-code convention).

Counted: matrix products (linear, matmul and @, mm, mv, dot, bmm, addmm, baddbmm, einsum),
convolutions (also grouped, strided and transposed) and the two products of scaled-dot-product
attention (QK^T and AV). Not counted: element-wise ops, softmax, normalisation, bias additions,
pooling. The numbers are therefore exactly half of `torch.utils.flop_counter` (2 FLOPs per
multiply-add) and about 0.1 % below fvcore's defaults on a ViT (fvcore also prices the norms).
Thesis plots say "GFLOPs" in this convention.

How: a `TorchDispatchMode` reads the aten operators that actually run, below the Python API, so
products inside composite ops (`F.linear`, `einsum`, fused attention) are seen as the kernels they
execute, whatever Python function called them. Forward pre/post hooks keep a stack of module paths,
and each product is charged to the innermost module running it (e.g. "blocks.3.mlp.fc1"), so a
method can price its parts (`report.under("blocks.3.mlp")`) and charge only what a sample ran.

Two details keep the count honest: PyTorch's fused fast path of `nn.MultiheadAttention` /
`nn.TransformerEncoderLayer` (one opaque kernel in eval mode) is switched off while counting, so
its products are seen; and inference mode, which hands composite ops to the mode undecomposed,
is swapped for `no_grad` inside the counted region. A backward pass run inside the region is
counted too, under the root path "" (module hooks only run forward).
"""

from __future__ import annotations

import math
from collections import defaultdict
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten


def _matrix_product(args: tuple, out: Tensor) -> int:
    """mm / bmm / mv / dot: every output element is a K-long dot product, K = first factor's last dim."""
    return out.numel() * args[0].shape[-1]


def _matrix_product_plus(args: tuple, out: Tensor) -> int:
    """addmm / baddbmm / _addmm_activation: the added term comes first, the factors after it."""
    return out.numel() * args[1].shape[-1]


def _convolution(args: tuple, out: Tensor) -> int:
    """aten.convolution(input, weight, bias, stride, padding, dilation, transposed, ...)."""
    x, weight, transposed = args[0], args[1], args[6]
    if transposed:  # weight (C_in, C_out / groups, *kernel): each input element feeds C_out/g x kernel
        return x.numel() * math.prod(weight.shape[1:])
    return out.numel() * math.prod(weight.shape[1:])  # weight (C_out, C_in / groups, *kernel)


def _attention(args: tuple, out: Any) -> int:
    """QK^T and AV of scaled-dot-product attention; q (..., L, E), k (..., S, E), v (..., S, Ev)."""
    query, key, value = args[:3]
    batch_heads = math.prod(query.shape[:-2])
    return batch_heads * query.shape[-2] * key.shape[-2] * (query.shape[-1] + value.shape[-1])


_RULES: dict[Any, Callable[[tuple, Any], int]] = {
    aten.mm.default: _matrix_product,
    aten.bmm.default: _matrix_product,
    aten.mv.default: _matrix_product,
    aten.dot.default: _matrix_product,
    aten.addmm.default: _matrix_product_plus,
    aten.baddbmm.default: _matrix_product_plus,
    aten._addmm_activation.default: _matrix_product_plus,
    aten.convolution.default: _convolution,
    aten._scaled_dot_product_flash_attention_for_cpu.default: _attention,
    aten._scaled_dot_product_flash_attention.default: _attention,
    aten._scaled_dot_product_efficient_attention.default: _attention,
    aten._scaled_dot_product_cudnn_attention.default: _attention,
}


@dataclass
class FlopReport:
    """FLOPs of one counted region, by module path ("" = outside any submodule of the model)."""

    by_module: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.by_module.values())

    def under(self, prefix: str) -> int:
        """FLOPs of the module at `prefix` and everything inside it ("" is the whole region)."""
        if not prefix:
            return self.total
        return sum(v for k, v in self.by_module.items() if k == prefix or k.startswith(prefix + "."))

    def per_sample(self, batch_size: int) -> float:
        """Mean FLOPs of one sample when the region processed `batch_size` samples."""
        return self.total / batch_size


class _Mode(TorchDispatchMode):
    """Charges every counted aten op to the counter's current module path."""

    def __init__(self, counter: FlopCounter):
        super().__init__()
        self.counter = counter

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        rule = _RULES.get(func)
        if rule is not None:
            self.counter.add(rule(args, out[0] if isinstance(out, tuple) else out))
        return out


class _MhaFastPathOff:
    """Switch off the fused nn.MultiheadAttention kernel (its products are invisible to the mode)."""

    def __enter__(self) -> None:
        self.previous = torch.backends.mha.get_fastpath_enabled()
        torch.backends.mha.set_fastpath_enabled(False)

    def __exit__(self, *exc: Any) -> None:
        torch.backends.mha.set_fastpath_enabled(self.previous)


class FlopCounter:
    """Context manager counting the FLOPs of everything run inside it, by module of `model`.

        with FlopCounter(model) as counter:
            model(x)
        counter.report.total, counter.report.under("blocks.0")

    Entering the same counter again keeps adding to its totals (e.g. over an evaluation loop).
    """

    def __init__(self, model: nn.Module | None = None):
        self.model = model
        self._flops: dict[str, int] = defaultdict(int)
        self._stack: list[str] = [""]
        self._exit = ExitStack()

    def add(self, flops: int) -> None:
        self._flops[self._stack[-1]] += int(flops)

    @property
    def report(self) -> FlopReport:
        return FlopReport(dict(self._flops))

    def _push(self, name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: Any) -> None:
            self._stack.append(name)

        return hook

    def _pop(self, module: nn.Module, args: Any, output: Any) -> None:
        self._stack.pop()

    def _hook_modules(self) -> None:
        for name, module in self.model.named_modules() if self.model is not None else ():
            if name:
                self._exit.callback(module.register_forward_pre_hook(self._push(name)).remove)
                self._exit.callback(module.register_forward_hook(self._pop, always_call=True).remove)

    def __enter__(self) -> FlopCounter:
        self._hook_modules()
        if torch.is_inference_mode_enabled():
            self._exit.enter_context(torch.inference_mode(False))
            self._exit.enter_context(torch.no_grad())
        self._exit.enter_context(_MhaFastPathOff())
        self._exit.enter_context(_Mode(self))
        return self

    def __exit__(self, *exc: Any) -> None:
        self._exit.close()


@torch.no_grad()
def count_flops(model: nn.Module, *inputs: Any, **kwargs: Any) -> FlopReport:
    """FLOPs (multiply-add = 1) of one forward pass `model(*inputs, **kwargs)`, by module."""
    with FlopCounter(model) as counter:
        model(*inputs, **kwargs)
    return counter.report

"""FLOPs counting with one multiply-add = one FLOP (the fvcore / ACM-code convention).

Counted: matrix products (linear, matmul and @, mm, bmm, addmm, baddbmm, einsum), convolutions and
the two products of scaled-dot-product attention (QK^T and AV). Not counted: element-wise ops,
softmax, normalisation, bias additions, so the numbers compare with fvcore's defaults for
transformers and are exactly half of `torch.utils.flop_counter` (which counts 2 per multiply-add).

The counter reads the aten operators that actually run (a dispatch mode, so linear, einsum and
fused attention are seen as the products they execute) and attributes each product to the
innermost module running it, so a method can price its parts (`report.under("blocks.3.mlp")`)
and charge only what a sample executed.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode


aten = torch.ops.aten


def _matrix_product(args, out: Tensor) -> int:
    """mm / bmm: every output element is a K-long dot product, K = first factor's last dim."""
    return out.numel() * args[0].shape[-1]


def _matrix_product_plus(args, out: Tensor) -> int:
    """addmm / baddbmm: the added term comes first."""
    return out.numel() * args[1].shape[-1]


def _convolution(args, out: Tensor) -> int:
    x, weight, transposed = args[0], args[1], args[6]
    if transposed:  # weight (C_in, C_out / groups, *kernel): every input element feeds C_out/g x kernel
        return x.numel() * math.prod(weight.shape[1:])
    return out.numel() * math.prod(weight.shape[1:])  # (C_in / groups) x kernel per output element


def _attention(args, out) -> int:
    """QK^T and AV of scaled-dot-product attention; q (..., L, E), k (..., S, E), v (..., S, Ev)."""
    query, key, value = args[:3]
    return math.prod(query.shape[:-2]) * query.shape[-2] * key.shape[-2] * (query.shape[-1] + value.shape[-1])


_RULES: dict[Any, Callable[[tuple, Any], int]] = {
    aten.mm.default: _matrix_product,
    aten.bmm.default: _matrix_product,
    aten.addmm.default: _matrix_product_plus,
    aten.baddbmm.default: _matrix_product_plus,
    aten.convolution.default: _convolution,
    aten._scaled_dot_product_flash_attention_for_cpu.default: _attention,
    aten._scaled_dot_product_flash_attention.default: _attention,
    aten._scaled_dot_product_efficient_attention.default: _attention,
    aten._scaled_dot_product_cudnn_attention.default: _attention,
}


@dataclass
class FlopReport:
    """FLOPs of one counted region: the total and the share of every module path."""

    by_module: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.by_module.values())

    def under(self, prefix: str) -> int:
        """FLOPs of the module at `prefix` and everything inside it ("" is the whole model)."""
        if not prefix:
            return self.total
        return sum(v for k, v in self.by_module.items() if k == prefix or k.startswith(prefix + "."))

    def per_sample(self, batch_size: int) -> float:
        return self.total / batch_size


class _Mode(TorchDispatchMode):
    """Sees every aten op, also those run inside composite ops (linear, einsum, fused MHA)."""

    def __init__(self, counter: "FlopCounter"):
        super().__init__()
        self.counter = counter

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        rule = _RULES.get(func)
        if rule is not None:
            self.counter.add(rule(args, out[0] if isinstance(out, tuple) else out))
        return out


class FlopCounter:
    """Context manager counting the FLOPs of everything run inside it, by module of `model`.

        with FlopCounter(model) as counter:
            model(x)
        counter.report.total, counter.report.under("blocks.0")
    """

    def __init__(self, model: nn.Module | None = None):
        self.model = model
        self._flops: dict[str, int] = defaultdict(int)
        self._stack: list[str] = [""]
        self._handles: list[Any] = []
        self._mode = _Mode(self)
        self._guards: list[Any] = []

    def add(self, flops: int) -> None:
        self._flops[self._stack[-1]] += int(flops)

    @property
    def report(self) -> FlopReport:
        return FlopReport(dict(self._flops))

    def _enter_module(self, name: str):
        def hook(module, args):
            self._stack.append(name)
        return hook

    def _exit_module(self, module, args, output):
        self._stack.pop()

    def __enter__(self) -> "FlopCounter":
        if self.model is not None:
            for name, module in self.model.named_modules():
                if name:
                    self._handles.append(module.register_forward_pre_hook(self._enter_module(name)))
                    self._handles.append(module.register_forward_hook(self._exit_module, always_call=True))
        if torch.is_inference_mode_enabled():  # inference mode bypasses dispatch modes: leave it,
            self._guards = [torch.inference_mode(False), torch.no_grad()]  # staying gradient-free
        for guard in self._guards:
            guard.__enter__()
        self._mode.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._mode.__exit__(*exc)
        for guard in reversed(self._guards):
            guard.__exit__(*exc)
        self._guards = []
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


@torch.no_grad()
def count_flops(model: nn.Module, *inputs: Any, **kwargs: Any) -> FlopReport:
    """FLOPs (multiply-add = 1) of one forward pass `model(*inputs, **kwargs)`, by module."""
    with FlopCounter(model) as counter:
        model(*inputs, **kwargs)
    return counter.report

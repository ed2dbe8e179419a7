"""Forward hooks on a transformers decoder: read and edit the residual stream.

`Capture` keeps, per (kind, layer), the activations at the last input position (or every
position) of: `hidden` = output of decoder block `model.layers[i]` (the residual stream), `attn` =
output of `layers[i].self_attn`, `mlp` = output of `layers[i].mlp` (for Gemma2 both before its
post-norms, as the authors' code hooks them). Inputs are left-padded, so the last position is
the one predicting the first answer token for every row.

`Edit` rewrites the block output at the last position of chosen layers with a callable
`h -> h'`, on the prompt pass only: with a KV cache, later decoding steps feed one token and are
left alone (spec A.4).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterable, Iterator

import torch
from torch import nn

KINDS = ("hidden", "mlp", "attn")


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    inner = getattr(model, "model", model)
    layers = getattr(inner, "layers", None)
    if layers is None:
        raise TypeError(f"{type(model).__name__} has no .model.layers: not a Llama/Gemma-style decoder")
    return layers


def _module(layer: nn.Module, kind: str) -> nn.Module:
    return {"hidden": layer, "attn": layer.self_attn, "mlp": layer.mlp}[kind]


def _tensor(output: object) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


class Capture:
    """Context manager: activations of `kinds` at `layers`, last position (or all if `last=False`)."""

    def __init__(self, model: nn.Module, layers: Iterable[int], kinds: Iterable[str] = ("hidden",),
                 last: bool = True) -> None:
        self.model, self.layers, self.kinds, self.last = model, list(layers), list(kinds), last
        self.store: dict[tuple[str, int], list[torch.Tensor]] = {}
        self._handles: list = []

    def _hook(self, key: tuple[str, int]) -> Callable:
        def hook(module, args, output):
            value = _tensor(output).detach()
            if value.shape[1] < 2:  # a decoding step with a KV cache: only prompt passes are kept
                return
            value = value[:, -1] if self.last else value
            self.store.setdefault(key, []).append(value.float().cpu())
        return hook

    def __enter__(self) -> "Capture":
        layers = decoder_layers(self.model)
        for kind in self.kinds:
            for i in self.layers:
                self._handles.append(_module(layers[i], kind).register_forward_hook(self._hook((kind, i))))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def result(self) -> dict[tuple[str, int], torch.Tensor]:
        return {key: torch.cat(values) for key, values in self.store.items()}


EditFn = Callable[[torch.Tensor], torch.Tensor]


@contextmanager
def edit(model: nn.Module, edits: dict[int, EditFn] | None) -> Iterator[None]:
    """Apply `edits[layer](h_last) -> h_last'` to block outputs on the prompt pass only."""
    handles = []
    layers = decoder_layers(model)

    def make(fn: EditFn) -> Callable:
        def hook(module, args, output):
            hidden = _tensor(output)
            if hidden.shape[1] < 2:  # a decoding step with a KV cache: not the prompt pass
                return None
            hidden = hidden.clone()
            hidden[:, -1] = fn(hidden[:, -1].float()).to(hidden.dtype)
            return (hidden, *output[1:]) if isinstance(output, tuple) else hidden
        return hook

    try:
        for layer, fn in (edits or {}).items():
            handles.append(layers[layer].register_forward_hook(make(fn)))
        yield
    finally:
        for handle in handles:
            handle.remove()

"""Peak training memory, measured the same way for every method of a comparison.

On a GPU the allocator's peak (`torch.cuda.max_memory_allocated`) is the measurement. On the CPU
there is no per-run allocator peak, so a device-agnostic proxy is used instead: the bytes that
autograd saves for the backward pass (activations, counted once per storage and without the
parameters themselves), plus parameters, gradients and optimiser state. The process peak RSS is
reported beside it for what it is: the high-water mark of the whole process, not of one run.
"""

from __future__ import annotations

import resource
import sys
from typing import Iterable

import torch
from torch import Tensor, nn

MB = 2**20


class SavedTensorBytes:
    """Context manager summing the bytes autograd saves for backward inside it.

    Storages are counted once however many views of them are saved; storages listed in
    `exclude` (the parameters: they are held anyway) are not counted.
    """

    def __init__(self, exclude: Iterable[Tensor] = ()):
        self._exclude = {t.untyped_storage().data_ptr() for t in exclude}
        self._seen: set[int] = set()
        self.bytes = 0
        self._hooks = None

    def _pack(self, tensor: Tensor) -> Tensor:
        storage = tensor.untyped_storage()
        pointer = storage.data_ptr()
        if tensor.device.type != "meta" and pointer not in self._exclude and pointer not in self._seen:
            self._seen.add(pointer)
            self.bytes += storage.nbytes()
        return tensor

    def __enter__(self) -> SavedTensorBytes:
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda tensor: tensor)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._hooks.__exit__(*exc)


def state_bytes(model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> int:
    """Bytes held outside the activations: parameters, their current gradients, optimiser state."""
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    total += sum(p.grad.numel() * p.grad.element_size() for p in model.parameters() if p.grad is not None)
    if optimizer is not None:
        for state in optimizer.state.values():
            total += sum(v.numel() * v.element_size() for v in state.values() if isinstance(v, Tensor))
    return total


def process_peak_rss_mb() -> float:
    """High-water mark of this process's resident memory (MB), since the process started."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / MB if sys.platform == "darwin" else peak * 1024 / MB

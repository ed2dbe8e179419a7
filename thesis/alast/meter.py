"""The cost of a fine-tuning run as the thesis reports it: compute C, memory M, time T.

- C: training FLOPs summed over every step (`thesis.alast.costs.StepFlops`), reported in PFLOPs
  (1e15; 1 multiply-add = 1 FLOP, the core counter's convention).
- M: on a GPU the allocator peak; per step (reset before it) and over the run. On the CPU the
  saved-tensor proxy of `thesis.core.memory` (activations saved for backward + parameters,
  gradients and optimiser state), per step. Both the whole-run peak and the mean over steps of the
  per-step peak are kept: the thesis does not say which one its tables show (spec A.4).
- T: wall clock of the training steps (forward, backward, optimiser and budget update; CUDA
  synchronised), without data loading, evaluation or FLOP counting.
"""

from __future__ import annotations

import time
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from typing import Iterator

import torch
from torch import nn

from thesis.core.memory import MB, SavedTensorBytes, process_peak_rss_mb, state_bytes


@dataclass
class RunCosts:
    """Running totals; a plain dataclass so that a checkpoint can carry it across a resume."""

    steps: int = 0
    flops: int = 0
    seconds: float = 0.0
    step_peaks_mb: list[float] = field(default_factory=list)

    def state(self) -> dict:
        return asdict(self)

    def metrics(self, memory_kind: str) -> dict[str, object]:
        peaks = self.step_peaks_mb or [0.0]
        metrics: dict[str, object] = {
            "cost/steps": self.steps,
            "cost/train_flops": self.flops,
            "cost/train_pflops": self.flops / 1e15,
            "time/train_s": self.seconds,
            "time/train_min": self.seconds / 60,
            "memory/kind": memory_kind,
            "memory/peak_mb": max(peaks),
            "memory/mean_step_mb": sum(peaks) / len(peaks),
        }
        if memory_kind != "cuda":
            metrics["memory/process_peak_rss_mb"] = process_peak_rss_mb()
        return metrics


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextmanager
def measure_step(costs: RunCosts, model: nn.Module, optimizer: torch.optim.Optimizer,
                 device: torch.device) -> Iterator[None]:
    """Time one training step and record its memory peak into `costs`."""
    with ExitStack() as stack:
        saved = None
        if device.type == "cuda":
            _sync(device)
            torch.cuda.reset_peak_memory_stats(device)
        else:
            saved = stack.enter_context(SavedTensorBytes(exclude=model.parameters()))
        start = time.perf_counter()
        yield
        _sync(device)
        costs.seconds += time.perf_counter() - start
    if saved is None:
        costs.step_peaks_mb.append(torch.cuda.max_memory_allocated(device) / MB)
    else:
        costs.step_peaks_mb.append((saved.bytes + state_bytes(model, optimizer)) / MB)
    costs.steps += 1

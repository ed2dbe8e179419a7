"""The shared training-free evaluation runner, for chapters whose methods act at inference.

Inference chapters (KV-cache compression, steering, sink analysis, ...) evaluate a loaded model
under a method; they get a plain loop with a progress bar, no Trainer.
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator, Mapping, TypeVar

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from tqdm.auto import tqdm

from thesis.core.hardware import device_of
from thesis.core.rundir import RunDir

T = TypeVar("T")


def progress(items: Iterable[T], desc: str, total: int | None = None) -> Iterator[T]:
    """Every long evaluation loop goes through this: a tqdm bar that stays quiet when not a tty."""
    return iter(tqdm(items, desc=desc, total=total, dynamic_ncols=True, mininterval=2.0, leave=False))


def run_evaluation(cfg: DictConfig, run: RunDir) -> Mapping[str, object]:
    """Runner `evaluate`: instantiate model, data and `method.evaluator`, then call the evaluator.

    The evaluator is a callable `(model, data, run, device) -> metrics dict`; it owns its loop
    (through `progress`) and may write per-run tables with `run.write_table`.
    """
    device = device_of(cfg.hardware)
    model = instantiate(cfg.model)
    if isinstance(model, torch.nn.Module):
        model = model.to(device).eval()
    data = instantiate(cfg.data)
    evaluator: Callable[..., Mapping[str, object]] = instantiate(cfg.method.evaluator)
    with torch.inference_mode():
        return evaluator(model=model, data=data, run=run, device=device)

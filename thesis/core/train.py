"""The shared Lightning training runner: build a Trainer from config, fit with resume, test.

Chapters with several training stages (ACM, MoEfication, ...) call `fit` once per stage with a
stage name; each stage checkpoints under the run directory and resumes from its last checkpoint,
so a killed run restarted with the same command continues where it stopped. A checkpoint holds
what the continuation needs to compute what an uninterrupted run computes: the random
generators' states and, for `thesis.core.data.ResumableDataLoader`s, the place in the epoch.
"""

from __future__ import annotations

import logging
import math
import random
import types
import typing
import zipfile
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import lightning as L
import numpy as np
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from thesis.core.data import ResumableDataLoader
from thesis.core.errors import CheckpointError, NonFiniteLossError
from thesis.core.hardware import check_hardware, check_launch
from thesis.core.rundir import RunDir

log = logging.getLogger(__name__)


class FiniteLossGuard(Callback):
    """Stop training with the step number as soon as the loss is NaN or Inf."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if loss is not None and not math.isfinite(float(loss)):
            raise NonFiniteLossError(
                f"training loss became {float(loss)} at global step {trainer.global_step} "
                f"(epoch {trainer.current_epoch}, batch {batch_idx}): lower the learning rate "
                "or enable gradient clipping (trainer.gradient_clip_val)"
            )


class RankAveragedMetrics(Callback):
    """Under DDP/FSDP each process logs metrics over its shard of the data; average them over the
    processes so that the metrics a run reports cover the whole split.

    The shards are equal in size (Lightning's DistributedSampler pads the last one by repeating up
    to world_size - 1 samples), so the mean of the shard means is the mean over the split.
    Metrics already logged with `sync_dist=True` are equal on every process and stay unchanged.
    """

    @staticmethod
    def _average(trainer: L.Trainer) -> None:
        if trainer.world_size == 1:
            return
        metrics = trainer.callback_metrics
        for name in sorted(metrics):  # the same order on every process: these are collective calls
            metrics[name] = trainer.strategy.reduce(metrics[name].float(), reduce_op="mean")

    def on_train_end(self, trainer, pl_module) -> None:
        self._average(trainer)

    def on_test_end(self, trainer, pl_module) -> None:
        self._average(trainer)


def random_state() -> dict[str, Any]:
    """Python's, NumPy's, torch's and CUDA's global generator states, as tensors and plain numbers
    (what a checkpoint loaded with `weights_only=True` accepts)."""
    numpy_state = np.random.get_state(legacy=False)
    state = {
        "python": random.getstate(),
        "numpy": {"key": torch.from_numpy(numpy_state["state"]["key"].astype(np.int64)),
                  "pos": numpy_state["state"]["pos"], "has_gauss": numpy_state["has_gauss"],
                  "gauss": numpy_state["gauss"]},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_random_state(state: Mapping[str, Any]) -> None:
    random.setstate(state["python"])
    numpy_state = state["numpy"]
    np.random.set_state({"bit_generator": "MT19937", "has_gauss": numpy_state["has_gauss"], "gauss": numpy_state["gauss"],
                         "state": {"key": numpy_state["key"].numpy().astype(np.uint32), "pos": numpy_state["pos"]}})
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def resumable_loaders(trainer: L.Trainer) -> list[ResumableDataLoader]:
    """The trainer's training loaders that can record their place in the epoch."""
    loaders = trainer.train_dataloader
    loaders = list(loaders.values()) if isinstance(loaders, Mapping) else \
        list(loaders) if isinstance(loaders, (list, tuple)) else [loaders]
    return [loader for loader in loaders if isinstance(loader, ResumableDataLoader)]


class ResumeState(Callback):
    """Puts into every checkpoint what Lightning leaves out and an exact continuation needs: the
    random generators' states and each training loader's place in its epoch. Both are restored
    when training resumes, so dropout, sampled gates, the shuffle and the remaining batches are
    those of the uninterrupted run.

    (Lightning also saves loader positions, but restores them only if it has not built the
    training loader before restoring, which `estimated_stepping_batches` in
    `configure_optimizers` does.)
    """

    KEY = "resume_state"

    def __init__(self) -> None:
        self._restore: Mapping[str, Any] | None = None

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        checkpoint[self.KEY] = {"random": random_state(),
                                "loaders": [loader.state_dict() for loader in resumable_loaders(trainer)]}

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        self._restore = checkpoint.get(self.KEY)

    def on_train_start(self, trainer, pl_module) -> None:
        """Restore here, after the sanity check and data set-up and right before the first batch:
        nothing between the checkpoint and the next batch draws in the uninterrupted run either."""
        if self._restore is None:
            return
        state, self._restore = self._restore, None
        set_random_state(state["random"])
        for loader, position in zip(resumable_loaders(trainer), state["loaders"]):
            loader.load_state_dict(position)


def check_checkpoint(path: Path) -> None:
    """Raise CheckpointError if `path` (a torch zip archive) is truncated or fails its checksums."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        bad = f"{type(exc).__name__}: {exc}"
    if bad is not None:
        raise CheckpointError(
            f"checkpoint {path} is corrupt or truncated ({bad}): delete it to restart this stage from its "
            "beginning, or rerun with force=true to restart the whole run"
        )


def checkpoint_callbacks(cfg: DictConfig, run: RunDir, stage: str) -> list[ModelCheckpoint]:
    """`last.ckpt` of the stage at every epoch end and, with `checkpoint_every_n_steps`, every n steps."""
    folder = run.checkpoint_dir / stage
    callbacks = [ModelCheckpoint(dirpath=folder, save_last=True, save_top_k=0)]
    every = cfg.get("checkpoint_every_n_steps")
    if every:
        callbacks.append(ModelCheckpoint(dirpath=folder, save_last=True, save_top_k=0, every_n_train_steps=every))
    return callbacks


def _checkable(hint: Any) -> Any:
    """The type OmegaConf can check for one annotated Trainer argument, or Any."""
    options = typing.get_args(hint) if typing.get_origin(hint) in (Union, types.UnionType) else (hint,)
    kinds = {kind for kind in options if kind is not type(None)}
    if len(kinds) == 1 and next(iter(kinds)) in (int, float, bool, str):
        kind = next(iter(kinds))
    elif kinds == {int, float}:
        kind = float
    else:
        return Any
    return Optional[kind] if type(None) in options else kind


def trainer_argument_types() -> dict[str, Any]:
    """lightning.Trainer's keyword arguments, each with the type a config value must have."""
    hints = typing.get_type_hints(L.Trainer.__init__)
    return {name: _checkable(hint) for name, hint in hints.items() if name != "return"}


def build_logger(cfg: DictConfig, run: RunDir, stage: str):
    """The configured Lightning logger writing into the run directory, or False for none."""
    if cfg.logger is None or cfg.logger.get("_target_") is None:
        return False
    if "wandb" in cfg.logger._target_.lower():
        return instantiate(cfg.logger, save_dir=str(run.path), name=f"{run.path.name}-{stage}")
    return instantiate(cfg.logger, save_dir=str(run.path), name="logs", version=stage)


def build_trainer(cfg: DictConfig, run: RunDir, stage: str = "train", **overrides: Any) -> L.Trainer:
    """A Trainer from `cfg.trainer` + `cfg.hardware`, checkpointing to `<run>/checkpoints/<stage>`."""
    check_hardware(cfg.hardware)
    kwargs: dict[str, Any] = OmegaConf.to_container(cfg.trainer, resolve=True)
    kwargs.update(overrides)
    callbacks = [*checkpoint_callbacks(cfg, run, stage), ResumeState(), FiniteLossGuard(),
                 RankAveragedMetrics()]
    trainer = L.Trainer(
        accelerator=cfg.hardware.accelerator,
        devices=cfg.hardware.devices,
        strategy=cfg.hardware.strategy,
        precision=cfg.hardware.precision,
        num_nodes=cfg.hardware.get("num_nodes", 1),
        logger=build_logger(cfg, run, stage),
        callbacks=callbacks,
        default_root_dir=str(run.path),
        **kwargs,
    )
    check_launch(trainer.strategy)
    return trainer


def fit(
    module: L.LightningModule,
    datamodule: L.LightningDataModule,
    cfg: DictConfig,
    run: RunDir,
    stage: str = "train",
    test: bool = True,
    **trainer_overrides: Any,
) -> dict[str, float]:
    """Fit `module` (resuming from this stage's last checkpoint) and return its flat metrics.

    Metrics are Lightning's `callback_metrics` after fit (and test, if asked), as floats.
    """
    trainer = build_trainer(cfg, run, stage, **trainer_overrides)
    # Lightning keeps the mode a module arrives in; a model copied from one that was evaluated
    # would otherwise train in eval mode (no dropout, no sampling gates). Modules that keep a
    # frozen part in eval mode do so in their own `train()`.
    module.train()
    last = run.checkpoint_dir / stage / "last.ckpt"
    if last.is_file():
        check_checkpoint(last)
        log.info("resuming stage %r from %s", stage, last)
    trainer.fit(module, datamodule=datamodule, ckpt_path=str(last) if last.is_file() else None)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    if test:
        trainer.test(module, datamodule=datamodule, verbose=False)
        metrics.update({k: float(v) for k, v in trainer.callback_metrics.items()})
    return metrics


def run_training(cfg: DictConfig, run: RunDir) -> dict[str, object]:
    """Runner `train`: instantiate data, model and method module, fit, test, report.

    `cfg.method.module` is instantiated with `model=<the model>`; a module that defines
    `final_metrics()` adds its own metrics (e.g. FLOPs) after testing.
    """
    datamodule = instantiate(cfg.data)
    model = instantiate(cfg.model)
    module = instantiate(cfg.method.module, model=model)
    metrics: dict[str, object] = dict(fit(module, datamodule, cfg, run))
    if hasattr(module, "final_metrics"):
        metrics.update(module.final_metrics(datamodule=datamodule, run=run))
    return metrics

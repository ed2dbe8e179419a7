"""The shared Lightning training runner: build a Trainer from config, fit with resume, test.

Chapters with several training stages (ACM, MoEfication, ...) call `fit` once per stage with a
stage name; each stage checkpoints under the run directory and resumes from its last checkpoint,
so a killed run restarted with the same command continues where it stopped.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Mapping

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from thesis.core.errors import NonFiniteLossError
from thesis.core.hardware import check_hardware
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
    checkpoint = ModelCheckpoint(dirpath=run.checkpoint_dir / stage, save_last=True, save_top_k=0)
    return L.Trainer(
        accelerator=cfg.hardware.accelerator,
        devices=cfg.hardware.devices,
        strategy=cfg.hardware.strategy,
        precision=cfg.hardware.precision,
        num_nodes=cfg.hardware.get("num_nodes", 1),
        logger=build_logger(cfg, run, stage),
        callbacks=[checkpoint, FiniteLossGuard()],
        default_root_dir=str(run.path),
        **kwargs,
    )


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

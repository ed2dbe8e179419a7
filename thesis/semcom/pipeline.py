"""The trained models every semcom experiment needs, each trained once and shared.

Stages (Sec. 3.3.6, two-stage as in the authors' code, spec B.3):
  backbone            plain ViT, CE only (ViT AE backbone, clean classifier of the digital baselines)
  adaptive[lambda_s]  backbone + budget tokens + selectors, eq. 3.33
  djscc[kind, regime] adaptive (kind=adaptive) or backbone (kind=static, the ViT AE) + codecs for every
                      r, fine-tuned robust (SNR ~ U[-20, 20] dB) or noiseless
A stage is stored under `<output_dir>/.stages/semcom_<stage>_<hash>/model.pt`, the hash covering
everything that determines it (model, data, its own settings and those of the stages below it,
trainer, seed), so the curve, FLOPs, controller and visualisation experiments reuse the same
models and a changed setting retrains only what depends on it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from thesis.core.rundir import RunDir
from thesis.core.seeding import seed_everything
from thesis.core.train import fit
from thesis.semcom.channel import Link
from thesis.semcom.lightning import SemcomModule
from thesis.semcom.model import SemanticViT

log = logging.getLogger(__name__)
WEIGHTS = "model.pt"


def _plain(node) -> object:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def stage_dir(cfg: DictConfig, name: str, what: dict) -> RunDir:
    basis = {"model": _plain(cfg.model), "data": _plain(cfg.data), "trainer": _plain(cfg.trainer),
             "seed": cfg.seed, **{k: _plain(v) for k, v in what.items()}}
    digest = hashlib.sha256(json.dumps(basis, sort_keys=True, default=str).encode()).hexdigest()[:10]
    return RunDir(Path(cfg.paths.output_dir) / ".stages" / f"semcom_{name}_{digest}")


def build(cfg: DictConfig, num_classes: int, adaptive: bool, link: bool) -> SemanticViT:
    sel = cfg.method.selection
    model = SemanticViT(instantiate(cfg.model, num_classes=num_classes), split=cfg.method.split, adaptive=adaptive,
                        init_gate_bias=sel.init_gate_bias, init_thr_bias=sel.init_thr_bias, delta=sel.delta,
                        scale_kept=sel.scale_kept)
    if link:
        dj = cfg.method.djscc
        model.attach_link(Link(model.dim, dj.ratios, dj.layers, dj.normalize))
    return model


def _train(cfg: DictConfig, model: SemanticViT, datamodule, stages: RunDir, stage: str, settings: DictConfig,
           **module_args) -> None:
    seed_everything(cfg.seed)
    module = SemcomModule(model, lr=settings.lr, weight_decay=settings.weight_decay, **module_args)
    result = fit(module, datamodule, cfg, stages, stage=stage, test=False, max_epochs=settings.epochs,
                 limit_val_batches=0, reload_dataloaders_every_n_epochs=1)
    stages.write_metrics(result)
    torch.save(model.state_dict(), stages.path / WEIGHTS)


def restore_trained(cfg: DictConfig, stages: RunDir, model) -> bool:
    """Load a stage's saved weights into `model` (True), or clear the stage folder for a fresh
    training (False; also when `cfg.force` asks for one)."""
    weights = stages.path / WEIGHTS
    if weights.is_file() and not cfg.force:
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        return True
    stages.clear()
    return False


class Stages:
    """Trained models of one configuration, built on first request (and kept in memory)."""

    def __init__(self, cfg: DictConfig, datamodule):
        self.cfg, self.data = cfg, datamodule
        self.num_classes = datamodule.num_classes
        self._memo: dict[tuple, SemanticViT] = {}

    def backbone(self) -> SemanticViT:
        key = ("backbone",)
        if key not in self._memo:
            cfg = self.cfg
            model = build(cfg, self.num_classes, adaptive=False, link=False)
            stages = stage_dir(cfg, "backbone", {"pretrain": cfg.method.pretrain})
            if not restore_trained(cfg, stages, model):
                log.info("training the backbone")
                _train(cfg, model, self.data, stages, "backbone", cfg.method.pretrain)
            self._memo[key] = model.eval()
        return self._memo[key]

    def adaptive(self, lambda_s: float | None = None) -> SemanticViT:
        cfg = self.cfg
        sel = cfg.method.selection
        lambda_s = float(sel.lambda_s if lambda_s is None else lambda_s)
        if lambda_s != float(sel.lambda_s) and sel.sweep_epochs is not None:
            sel = OmegaConf.merge(sel, {"epochs": sel.sweep_epochs})   # the other lambda_s of Fig. 3.29
        key = ("adaptive", lambda_s)
        if key not in self._memo:
            model = build(cfg, self.num_classes, adaptive=True, link=False)
            stages = stage_dir(cfg, f"adaptive_ls{lambda_s:g}", {"pretrain": cfg.method.pretrain, "selection": sel,
                                                                 "lambda_s": lambda_s, "split": cfg.method.split})
            if not restore_trained(cfg, stages, model):
                model.load_state_dict(self.backbone().state_dict(), strict=False)
                log.info("training token selection, lambda_s=%g", lambda_s)
                _train(cfg, model, self.data, stages, "selection", sel, lambda_s=lambda_s, lambda_r=sel.lambda_r,
                       epsilon=sel.epsilon, mean_over=sel.mean_over, hard_penalty=sel.hard_penalty,
                       alpha_range=sel.alpha_range)
            self._memo[key] = model.eval()
        return self._memo[key]

    def djscc(self, kind: str, regime: str) -> SemanticViT:
        cfg = self.cfg
        key = ("djscc", kind, regime)
        if key not in self._memo:
            adaptive = kind == "adaptive"
            base = self.adaptive() if adaptive else self.backbone()
            model = build(cfg, self.num_classes, adaptive=adaptive, link=True)
            what = {"pretrain": cfg.method.pretrain, "djscc": cfg.method.djscc, "kind": kind, "regime": regime,
                    "split": cfg.method.split, **({"selection": cfg.method.selection} if adaptive else {})}
            stages = stage_dir(cfg, f"djscc_{kind}_{regime}", what)
            if not restore_trained(cfg, stages, model):
                model.load_state_dict(base.state_dict(), strict=False)
                sel, dj = cfg.method.selection, cfg.method.djscc
                log.info("training the %s DJSCC pipeline (%s)", kind, regime)
                _train(cfg, model, self.data, stages, f"djscc_{kind}_{regime}", dj, lambda_s=sel.lambda_s,
                       lambda_r=sel.lambda_r, epsilon=sel.epsilon, mean_over=sel.mean_over,
                       hard_penalty=sel.hard_penalty, alpha_range=sel.alpha_range, regime=regime,
                       train_snr=dj.train_snr, freeze_backbone=dj.freeze_backbone)
            self._memo[key] = model.eval()
        return self._memo[key]

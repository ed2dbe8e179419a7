"""`alast_mini`: ALaST and its baselines fine-tuning a small pre-trained ViT, with pre-registered claims.

Stands in for Tables 3.2-3.8 offline (spec A.5): a 12-block ViT is pre-trained once on the source
classes of the colour cluttered digits (`thesis.alast.canvas`; stands in for ImageNet), then every
method in `method.methods` fine-tunes a copy on the target classes with a fresh head, for the same
number of epochs, from the same seed. Each gives a row of `cost_vs_acc` (accuracy, C, M, T); ALaST
runs add their budget traces; the FT-full run records gradient norms for the Fig. 3.14 analogue;
the pre-trained model's relative magnitudes give the Fig. 3.12 analogue. The claims and their
thresholds are in the method config, fixed before the first run.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from thesis.alast.analysis import grad_delta_correlation
from thesis.alast.importance import relative_magnitude
from thesis.core.claims import claim, claim_metrics
from thesis.core.errors import ConfigError
from thesis.core.modules import ClassificationModule
from thesis.core.rundir import RunDir
from thesis.core.seeding import seed_everything
from thesis.core.train import fit

PRETRAINED_FILE = "pretrained.pt"


def pretrain_dir(cfg: DictConfig) -> RunDir:
    """Where the pre-trained model is kept: named by a hash of what determines it (not the run seed)."""
    what = {"model": OmegaConf.to_container(cfg.model, resolve=True),
            "data": OmegaConf.to_container(cfg.data, resolve=True),
            "pretrain": OmegaConf.to_container(cfg.method.pretrain, resolve=True),
            "trainer": OmegaConf.to_container(cfg.trainer, resolve=True)}
    digest = hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:10]
    return RunDir(Path(cfg.paths.output_dir) / ".stages" / f"alast_pretrain_{digest}")


def pretrained_model(cfg: DictConfig) -> torch.nn.Module:
    """The source-task model: loaded when this configuration was pre-trained before, else trained."""
    settings = cfg.method.pretrain
    model = instantiate(cfg.model, num_classes=len(settings.classes))
    stages = pretrain_dir(cfg)
    weights = stages.path / PRETRAINED_FILE
    if weights.is_file() and not cfg.force:
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        return model
    if cfg.force:
        stages.clear()
    seed_everything(settings.seed)
    data = instantiate(cfg.data, classes=settings.classes, num_train=settings.num_train,
                       batch_size=settings.batch_size)
    module = ClassificationModule(model, lr=settings.lr, weight_decay=settings.weight_decay, cosine=True)
    result = fit(module, data, cfg, stages, stage="pretrain", max_epochs=settings.epochs,
                 reload_dataloaders_every_n_epochs=1)
    stages.write_metrics(result)
    torch.save(model.state_dict(), weights)
    return model


def line_at(x: float, a: tuple[float, float], b: tuple[float, float]) -> float:
    """The straight line through points a and b (x, y), evaluated at x."""
    return float(np.interp(x, [a[0], b[0]], [a[1], b[1]])) if a[0] != b[0] else a[1]


def mini_claims(rows: pd.DataFrame, claims: DictConfig, on_gpu: bool) -> list[dict]:
    """The pre-registered claims (spec A.5) from one row per method."""
    by = rows.set_index("method")
    need = [claims.alast, claims.full, claims.head, claims.random_k]
    if missing := [m for m in need if m not in by.index]:
        raise ConfigError(f"method.claims needs the methods {missing}: add them to method.run or set method.claims=null")
    alast, full, head, random_k = (by.loc[m] for m in need)
    ratio = lambda column: float(alast[column] / full[column])  # noqa: E731 - a one-line helper
    result = [
        claim("A1", "test accuracy of ALaST minus FT full", alast.accuracy - full.accuracy, ">=", claims.min_acc_gap),
        claim("A2", "training FLOPs of ALaST / FT full", ratio("train_flops"), "<=", claims.max_flops_ratio),
        claim("A3", "peak memory of ALaST / FT full (whole-run peak)", ratio("memory_peak_mb"), "<=",
              claims.max_memory_ratio),
        claim("A3m", "peak memory of ALaST / FT full (mean over steps of the step peak)", ratio("memory_mean_step_mb"),
              "<=", claims.max_memory_ratio),
        claim("S1", "ALaST accuracy minus the FT head - FT full line at ALaST's FLOPs",
              alast.accuracy - line_at(alast.train_flops, (head.train_flops, head.accuracy),
                                       (full.train_flops, full.accuracy)), ">=", 0.0),
        claim("S2", "accuracy of ALaST minus K uniformly random layers without token dropping",
              alast.accuracy - random_k.accuracy, ">=", 0.0),
    ]
    if on_gpu:
        result.append(claim("A4", "training time of ALaST / FT full", ratio("train_s"), "<=", claims.max_time_ratio))
    return result


def run_alast_mini(cfg: DictConfig, run: RunDir) -> dict[str, object]:
    method = cfg.method
    unknown = sorted(set(method.run) - set(method.methods))
    if unknown:
        raise ConfigError(f"method.run names {unknown}, not in method.methods: {', '.join(method.methods)}")
    source = pretrained_model(cfg)
    data = instantiate(cfg.data, classes=method.target_classes)
    data.setup()
    images = data.splits["train"].tensors[0][: method.analysis_images]
    magnitude = relative_magnitude(source, images)
    run.write_table("relative_magnitude", [{"layer": l, "relative_magnitude": float(v)} for l, v in enumerate(magnitude)])

    rows, traces, grads = [], [], []
    for name in method.run:
        seed_everything(cfg.seed)
        model = copy.deepcopy(source)
        model.reset_classifier(data.num_classes)
        module = instantiate(method.methods[name], model=model)
        result = fit(module, data, cfg, run, stage=name, max_epochs=method.epochs, reload_dataloaders_every_n_epochs=1)
        costs = module.final_metrics()
        rows.append({"method": name, "accuracy": result["test/acc"], "train_flops": costs["cost/train_flops"],
                     "train_s": costs["time/train_s"], "memory_peak_mb": costs["memory/peak_mb"],
                     "memory_mean_step_mb": costs["memory/mean_step_mb"], "memory_kind": costs["memory/kind"],
                     "kept_tokens": costs.get("tokens/mean_kept_fraction", 1.0), "steps": costs["cost/steps"]})
        traces += [{"method": name, **r} for r in module.trace]
        grads += [{"method": name, **r} for r in module.grad_rows]

    frame = pd.DataFrame(rows)
    run.write_table("cost_vs_acc", rows)
    run.write_table("budget_trace", traces)
    metrics: dict[str, object] = {"pretrain/relative_magnitude_min_layer": int(magnitude.argmin())}
    if grads:
        correlation = grad_delta_correlation(pd.DataFrame(grads))
        run.write_table("grad_delta_correlation", correlation.to_dict("records"))
    for row in rows:
        metrics.update({f"{row['method']}/{k}": v for k, v in row.items() if k != "method"})
    if method.get("claims"):
        results = mini_claims(frame, method.claims, on_gpu=torch.cuda.is_available() and cfg.hardware.accelerator != "cpu")
        run.write_table("claims", results)
        metrics.update(claim_metrics(results))
    return metrics

"""Runners of Sec. 3.3. `run_semcom` runs the parts named in `method.parts` on shared staged models:

  curves      accuracy vs rho per test SNR, adaptive and ViT AE pipelines, robust and noiseless,
              digital Resize / JPEG (Figs. 3.27-3.28); with `method.mnv3` set, the MobileNetV3
              baselines too (and MNV3 CNN in the controller)
  flops_gain  accuracy, budget adherence and FLOPs gain vs alpha for a lambda_s sweep (Fig. 3.29)
  controller  Lambda tables, (V, mu) search and test deployment of Alg. 2 (Table 3.10, Fig. 3.30)
  visualize   kept-token maps per block for a few budgets (Fig. 3.31)

Each part writes per-run tables and figures and returns flat metrics; with `method.claims` set,
the miniature's pre-registered claims are checked on what the parts measured.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from thesis.core.claims import claim_metrics
from thesis.core.errors import ConfigError
from thesis.core.rundir import RunDir
from thesis.semcom import figures
from thesis.semcom.baselines import digital_rows, digital_tables
from thesis.semcom.digital import needed_sides
from thesis.semcom.claims import mini_claims
from thesis.semcom.controller import controller_part
from thesis.semcom.evaluate import Grid, evaluate_grid, selection_profile
from thesis.semcom.mobilenet_pipeline import MobileNetStages, evaluate_split_grid, pipelines
from thesis.semcom.pipeline import Stages

PIPELINES = {"adaptive_robust": ("adaptive", "robust"), "adaptive_noiseless": ("adaptive", "noiseless"),
             "vitae_robust": ("static", "robust"), "vitae_noiseless": ("static", "noiseless")}


@dataclass
class Context:
    cfg: DictConfig
    run: RunDir
    data: object
    stages: Stages
    mnv3: MobileNetStages | None = None
    grids: dict[tuple[str, str], Grid] = field(default_factory=dict)
    tables: dict[str, list[dict]] = field(default_factory=dict)

    @property
    def ev(self) -> DictConfig:
        return self.cfg.method.evaluation

    @property
    def mnv3_pipelines(self) -> dict[str, tuple[str, str]]:
        """MobileNetV3 baselines of `method.mnv3.codecs` (none when `method.mnv3` is not set)."""
        return pipelines(self.cfg.method.mnv3.codecs) if self.mnv3 is not None else {}

    @property
    def pipelines(self) -> list[str]:
        return [*PIPELINES, *self.mnv3_pipelines]

    def loader(self, split: str) -> DataLoader:
        if split == "test":
            return self.data.test_dataloader()
        return DataLoader(self.data.splits["train"], batch_size=self.data.eval_batch_size, shuffle=False)

    def grid(self, pipeline: str, split: str) -> Grid:
        """Grid of a pipeline on the test images or the controller's training subset (cached)."""
        key = (pipeline, split)
        limit = self.ev.test_limit if split == "test" else self.ev.proxy_limit
        if key not in self.grids and pipeline in self.mnv3_pipelines:
            model = self.mnv3.djscc(*self.mnv3_pipelines[pipeline])
            self.grids[key] = evaluate_split_grid(model, self.loader(split), self.cfg.method.djscc.ratios,
                                                  self.ev.snr_grid, seed=self.cfg.seed, limit=limit,
                                                  desc=f"{pipeline}/{split}")
        if key not in self.grids:
            kind, regime = PIPELINES[pipeline]
            model = self.stages.djscc(kind, regime)
            self.grids[key] = evaluate_grid(model, self.loader(split), self.ev.alphas, self.cfg.method.djscc.ratios,
                                            self.ev.snr_grid, seed=self.cfg.seed, limit=limit,
                                            desc=f"{pipeline}/{split}")
        return self.grids[key]

    def write(self, name: str, rows: list[dict]) -> None:
        self.tables[name] = rows
        self.run.write_table(name, rows)


def curves_part(ctx: Context) -> dict[str, object]:
    rows = []
    for pipeline in ctx.pipelines:
        rows += ctx.grid(pipeline, "test").rows(pipeline)
    ctx.write("curves", rows)
    images = next(iter(ctx.loader("test")))[0]
    p, side = int(np.prod(images.shape[1:])), images.shape[-1]
    rhos = np.geomspace(*ctx.ev.digital_rho_range, ctx.ev.digital_rho_points)
    tables = digital_tables(ctx.stages.backbone(), ctx.loader("test"), getattr(ctx.data, "mean", None),
                            getattr(ctx.data, "std", None), needed_sides(rhos, ctx.ev.test_snrs, p, side),
                            ctx.ev.jpeg_qualities, limit=ctx.ev.digital_limit)
    digital = digital_rows(tables, rhos, ctx.ev.test_snrs, p, side)
    ctx.write("digital", digital)
    figures.accuracy_vs_rho(rows, digital, ctx.ev.test_snrs, ctx.run.path)
    metrics = {}
    for pipeline in ctx.pipelines:
        acc = ctx.grid(pipeline, "test").accuracy
        metrics[f"curves/{pipeline}/best_accuracy"] = float(acc.max())
    return metrics


def flops_gain_part(ctx: Context) -> dict[str, object]:
    rows = []
    for lambda_s in ctx.ev.lambda_sweep:
        model = ctx.stages.adaptive(lambda_s)
        for row in selection_profile(model, ctx.loader("test"), ctx.ev.alphas, limit=ctx.ev.test_limit,
                                     mlp_ratio=ctx.ev.mlp_ratio):
            rows.append({"lambda_s": float(lambda_s), **row})
    ctx.write("flops_gain", rows)
    figures.flops_gain(rows, ctx.run.path)
    main = [r for r in selection_profile(ctx.stages.adaptive(), ctx.loader("test"), ctx.ev.alphas,
                                         limit=ctx.ev.test_limit, mlp_ratio=ctx.ev.mlp_ratio)]
    ctx.write("budget_adherence", main)
    lo, hi = ctx.ev.adherence_range
    inside = [r for r in main if lo <= r["alpha"] <= hi]
    return {"selection/hard_adherence": float(np.mean([abs(r["hard_kept"] - r["alpha"]) for r in inside])),
            "selection/soft_adherence": float(np.mean([abs(r["soft_mean"] - r["alpha"]) for r in inside])),
            "selection/max_flops_gain": float(max(r["flops_gain"] for r in main))}


def visualize_part(ctx: Context) -> dict[str, object]:
    model = ctx.stages.adaptive()
    images = next(iter(ctx.loader("test")))[0][: ctx.ev.visualize_images]
    rows = []
    side = int(round(model.num_patches ** 0.5))
    for alpha in ctx.ev.visualize_alphas:
        _, _, masks, _, _ = model.encode(images, float(alpha), hard=True)
        for i in range(len(images)):
            for block, mask in enumerate([None, *masks], start=1):
                kept = np.ones(model.num_patches, bool) if mask is None else (mask[i] > model.delta).numpy()
                rows += [{"image": i, "alpha": float(alpha), "block": block, "token": j, "kept": bool(k)}
                         for j, k in enumerate(kept)]
    ctx.write("selection_maps", rows)
    figures.selection_maps(images, rows, side, getattr(ctx.data, "mean", None), getattr(ctx.data, "std", None),
                           ctx.run.path)
    return {"visualize/images": len(images)}


PARTS = {"curves": curves_part, "flops_gain": flops_gain_part, "controller": controller_part,
         "visualize": visualize_part}


def run_semcom(cfg: DictConfig, run: RunDir) -> dict[str, object]:
    unknown = sorted(set(cfg.method.parts) - set(PARTS))
    if unknown:
        raise ConfigError(f"method.parts names {unknown}; valid parts: {', '.join(PARTS)}")
    data = instantiate(cfg.data)
    data.setup()
    ctx = Context(cfg, run, data, Stages(cfg, data), MobileNetStages(cfg, data) if cfg.method.get("mnv3") else None)
    metrics: dict[str, object] = {"setting/split": cfg.method.split, "setting/classes": data.num_classes}
    for part in cfg.method.parts:
        metrics.update(PARTS[part](ctx))
    if cfg.method.get("claims"):
        rows = mini_claims(ctx, cfg.method.claims)
        run.write_table("claims", rows)
        metrics.update(claim_metrics(rows))
    return metrics

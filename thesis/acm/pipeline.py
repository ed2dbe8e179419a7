"""The ACM comparison of Sec. 3.1 (thesis Fig. 3.4) as one multi-stage runner.

A base ViT (trained here from scratch when `epochs.base > 0`, as in the miniature, or loaded
pre-trained, as at paper scale) is converted with the three ACM stages at several budgets
beta_target and compared, at measured FLOPs per sample, with the dense model, a static-width
control (the stage-1 ACMs at a fixed number of learners, fine-tuned without gates) and the
baselines; `method.parts` picks which of them run, so each baseline is also an experiment of its
own. Every stage checkpoints and resumes: base training and stages 1-2 in a directory shared by
the runs that differ only after them (`thesis.acm.shared_stages`: one run per beta_target or per
loss ablation trains them once), the rest in the run directory. When the method config has
`claims`, the pre-registered claims R1-R5 (spec D.b) are measured against their thresholds; the
spec B.8 analyses (`method.analysis`) add the tables of Figs. 3.6 and 3.9.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn
from sklearn.metrics import roc_auc_score

from thesis.acm.analysis import (choice_entropy, compute_histograms, distillation_error_rows, distillation_errors,
                                 image_compute)
from thesis.acm.convert import acmize_vit, set_forced_learners
from thesis.acm.evaluation import evaluate_classifier
from thesis.acm.avit import AViT, AViTModule
from thesis.acm.avit import evaluate as evaluate_avit
from thesis.acm.moefication import MoEficationRouterModule, evaluate_topk, moefy, relufy
from thesis.acm.ztw import ZTW, ZTWEnsembleModule, ZTWHeadsModule, evaluate_thresholds
from thesis.acm.shared_stages import shared_stages
from thesis.acm.stages import ACMTrainModule, DistillationModule, GatePretrainModule
from thesis.core.claims import claim, claim_metrics
from thesis.core.errors import ConfigError
from thesis.core.modules import ClassificationModule
from thesis.core.rundir import RunDir
from thesis.core.seeding import seed_everything
from thesis.core.train import fit


def interpolate(rows: list[dict], method: str, flops: float) -> float | None:
    """Accuracy of `method` linearly interpolated at `flops`; None outside its range."""
    points = sorted((r["flops"], r["accuracy"]) for r in rows if r["method"] == method)
    xs, ys = zip(*points)
    if not xs[0] <= flops <= xs[-1]:
        return None
    return float(np.interp(flops, xs, ys))


def foreground_auroc(maps, foreground) -> float:
    """AUROC of per-patch compute (class token excluded) as a detector of foreground patches."""
    patches = maps[:, -foreground.shape[1]:]
    return float(roc_auc_score(foreground.reshape(-1).numpy(), patches.reshape(-1).numpy()))


def example_maps(datamodule, maps_by_beta: dict, betas, count: int) -> list[dict]:
    """Long-form pixels and per-patch compute of the first `count` test images (Figs. 3.2 / 3.7)."""
    images, labels = datamodule.splits["test"].tensors
    side = images.shape[-1] // datamodule.patch
    rows = []
    for beta in betas:
        patches = maps_by_beta[beta][:count, -side * side:].reshape(-1, side, side)
        for i in range(min(count, len(images))):
            rows += [{"beta_target": beta, "sample": i, "label": int(labels[i]), "kind": "image", "y": y, "x": x,
                      "value": float(images[i, 0, y, x])} for y in range(images.shape[-2]) for x in range(images.shape[-1])]
            rows += [{"beta_target": beta, "sample": i, "label": int(labels[i]), "kind": "compute", "y": y, "x": x,
                      "value": float(patches[i, y, x])} for y in range(side) for x in range(side)]
    return rows


def _trainable_copy(model: nn.Module) -> nn.Module:
    """A copy with every parameter trainable again (stages 1-2 freeze the base and the learners)."""
    return copy.deepcopy(model).requires_grad_(True)


def _fit(module, datamodule, cfg: DictConfig, run: RunDir, stage: str, epochs: int) -> None:
    """One stage, at its own batch size when `method.batch_sizes.<stage kind>` says so."""
    sizes = cfg.method.get("batch_sizes") or {}
    kind = next((k for k in sizes if stage.startswith(k)), None)
    if kind is not None:
        datamodule.batch_size = sizes[kind]
    fit(module, datamodule, cfg, run, stage=stage, test=False, max_epochs=epochs)


def _fit_shared(module, datamodule, cfg: DictConfig, stages: RunDir, stage: str, epochs: int) -> bool:
    """`_fit` for a stage of the shared directory: once a run has finished it, later runs load its
    checkpoint instead of resuming the fit, which would restart (and empty) the stage's logs.
    Returns whether this run trained the stage (False: it loaded another run's result)."""
    folder = stages.checkpoint_dir / stage
    if (folder / "finished").is_file():
        module.load_state_dict(torch.load(folder / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"])
        return False
    _fit(module, datamodule, cfg, stages, stage, epochs)
    if (folder / "last.ckpt").is_file():
        (folder / "finished").touch()
    return True


PARTS = ("dense", "acm", "static", "moefication", "ztw", "avit")


def selected_parts(method: DictConfig) -> set[str]:
    """`method.parts` checked against what it needs, so a bad choice fails before any training."""
    parts = set(method.parts)
    if unknown := sorted(parts - set(PARTS)):
        raise ConfigError(f"method.parts has unknown {unknown}; valid parts: {', '.join(PARTS)}")
    if "dense" not in parts:
        raise ConfigError("method.parts must include dense: every row is read against the dense model")
    for part in sorted(parts & {"moefication", "ztw", "avit"}):
        if method.get(part) is None:
            raise ConfigError(f"method.parts has {part} but the method config has no {part} section: "
                              f"use method=acm_vitb or drop {part} from method.parts")
    if method.get("claims"):
        if "acm" not in parts:
            raise ConfigError("method.claims measures ACM rows: add acm to method.parts or set method.claims=null")
        if missing := sorted(set(method.claims.r5_betas) - set(method.acm.betas)):
            raise ConfigError(f"method.claims.r5_betas {missing} are not in method.acm.betas: "
                              "add them or set method.claims=null")
    return parts


def aux_losses(stage3: DictConfig) -> str:
    """The stage-3 auxiliary losses switched on, e.g. "L_b+L_e" (the ablation's variant name)."""
    weights = {"L_b": stage3.alpha_b, "L_e": stage3.alpha_e, "L_d": stage3.alpha_d}
    return "+".join(name for name, alpha in weights.items() if alpha) or "none"


def convert_and_pretrain(base: nn.Module, datamodule, test, cfg: DictConfig, run: RunDir,
                         stages: RunDir) -> tuple[nn.Module, list[dict]]:
    """ACM stages 1 and 2 from `base`, checkpointed in the shared `stages` directory; returns the
    converted model and the thesis's stage-1 sanity check on `test` (every ACM at k learners,
    k = 1..N). The distillation-error table (Fig. 3.6), when asked for, is measured right after
    stage 1 by the run that trained it: the runs that load the shared stage 1 would only repeat it
    (in the loss ablation, four identical copies)."""
    method = cfg.method
    seed_everything(cfg.seed)
    converted = copy.deepcopy(base)
    acmize_vit(converted, **method.acm.convert)
    trained = _fit_shared(DistillationModule(base, converted, **method.acm.stage1), datamodule, cfg, stages,
                          "acm_stage1", method.epochs.acm_stage1)
    if method.analysis.distill_errors and trained:
        with torch.random.fork_rng(devices=[]):  # the analysis must not shift stage 2's random draws
            errors = distillation_errors(base, converted, test, method.analysis.modules, method.analysis.samples)
        run.write_table("distill_errors", distillation_error_rows(errors))
    rows = []
    for k in range(1, method.acm.convert.num_learners + 1):
        set_forced_learners(converted, k)
        rows.append(evaluate_classifier(converted, test, "acm_stage1", f"k={k}")[0])
    set_forced_learners(converted, None)
    _fit_shared(GatePretrainModule(base, converted, **method.acm.stage2), datamodule, cfg, stages,
                "acm_stage2", method.epochs.acm_stage2)
    return converted, rows


def run_acm_comparison(cfg: DictConfig, run: RunDir) -> dict[str, object]:
    """Runner of the comparison: the parts of `method.parts`, in the order dense, ACM (stages 1-2,
    then stage 3 per beta), static width, MoEfication, ZTW, A-ViT; every part reseeds first."""
    method = cfg.method
    parts = selected_parts(method)
    datamodule = instantiate(cfg.data)
    datamodule.setup()
    test = datamodule.test_dataloader()
    rows: list[dict] = []

    with shared_stages(cfg) as stages:
        seed_everything(cfg.seed)
        base = instantiate(cfg.model)
        if method.epochs.base > 0:
            _fit_shared(ClassificationModule(base, **method.base), datamodule, cfg, stages, "base",
                        method.epochs.base)
        rows.append(evaluate_classifier(base, test, "dense", "dense")[0])
        if parts & {"acm", "static"}:
            converted, stage1_rows = convert_and_pretrain(base, datamodule, test, cfg, run, stages)
            rows += stage1_rows

    maps_by_beta, histograms, spread = {}, [], {}
    betas = method.acm.betas if "acm" in parts else []
    for beta in betas:
        seed_everything(cfg.seed)
        model = _trainable_copy(converted)
        _fit(ACMTrainModule(model, beta_target=beta, **method.acm.stage3), datamodule, cfg, run,
             f"acm_stage3_beta{beta:g}", method.epochs.acm_stage3)
        row, maps_by_beta[beta] = evaluate_classifier(model, test, "acm", f"beta={beta:g}", maps=True)
        rows.append({**row, "beta_target": beta})
        if method.analysis.compute_histograms:
            variant = {"beta_target": beta, "losses": aux_losses(method.acm.stage3)}
            histograms += [{**variant, **r} for r in compute_histograms(maps_by_beta[beta], method.analysis.bins)]
            spread[f"acm/beta={beta:g}/image_compute_std"] = float(image_compute(maps_by_beta[beta]).std())
            spread[f"acm/beta={beta:g}/choice_entropy"] = float(choice_entropy(model, test).mean())
            spread["acm/losses"] = variant["losses"]

    static_learners = method.static.learners if "static" in parts else []
    for k in static_learners:
        seed_everything(cfg.seed)
        model = _trainable_copy(converted)
        set_forced_learners(model, k)
        _fit(ClassificationModule(model, **method.static.optim), datamodule, cfg, run, f"static_k{k}",
             method.epochs.static)
        rows.append(evaluate_classifier(model, test, "acm_static", f"k={k}")[0])

    if "moefication" in parts:
        rows += run_moefication(base, datamodule, cfg, run)
    if "ztw" in parts:
        rows += run_ztw(base, datamodule, cfg, run)
    if "avit" in parts:
        rows += run_avit(base, datamodule, cfg, run)

    run.write_table("cost_vs_acc", rows)
    if histograms:
        run.write_table("compute_histograms", histograms)
    metrics: dict[str, object] = {}
    for r in rows:
        metrics[f"{r['method']}/{r['setting']}/acc"] = r["accuracy"]
        metrics[f"{r['method']}/{r['setting']}/flops"] = r["flops"]
        if "compute" in r:
            metrics[f"{r['method']}/{r['setting']}/compute"] = r["compute"]
    metrics.update(spread)
    foreground = getattr(datamodule, "foreground", {}).get("test")
    if foreground is not None and maps_by_beta:
        run.write_table("patch_compute", patch_compute(maps_by_beta, foreground))
        maps_betas = [b for b in method.maps_betas if b in maps_by_beta]
        run.write_table("example_maps", example_maps(datamodule, maps_by_beta, maps_betas, method.num_examples))
    if method.get("claims"):
        results = acm_claims(rows, maps_by_beta, foreground, method.claims, max(method.acm.betas))
        run.write_table("claims", results)
        metrics.update(claim_metrics(results))
    return metrics


def run_moefication(base, datamodule, cfg: DictConfig, run: RunDir) -> list[dict]:
    """MoEfication from the same base: ReLU fine-tuning, balanced expert split, router training,
    then one evaluation per number of experts k (one training, many points)."""
    settings, epochs = cfg.method.moefication, cfg.method.epochs
    seed_everything(cfg.seed)
    model = relufy(_trainable_copy(base))
    _fit(ClassificationModule(model, lr=settings.relu_lr), datamodule, cfg, run, "moefication_relu",
         epochs.moefication_relu)
    moefy(model, settings.num_experts, settings.router_hidden, seed=cfg.seed)
    _fit(MoEficationRouterModule(model, lr=settings.router_lr), datamodule, cfg, run, "moefication_router",
         epochs.moefication_router)
    return evaluate_topk(model, datamodule.test_dataloader(), settings.ks)


def run_ztw(base, datamodule, cfg: DictConfig, run: RunDir) -> list[dict]:
    """Zero Time Waste on the frozen base: cascading heads, then geometric ensembles, then
    confidence exits at every threshold (one training, many points)."""
    settings, epochs = cfg.method.ztw, cfg.method.epochs
    seed_everything(cfg.seed)
    model = ZTW(_trainable_copy(base), head_hidden=settings.head_hidden, head_layers=settings.head_layers)
    _fit(ZTWHeadsModule(model, lr=settings.lr), datamodule, cfg, run, "ztw_heads", epochs.ztw_heads)
    _fit(ZTWEnsembleModule(model, lr=settings.lr), datamodule, cfg, run, "ztw_ensembles", epochs.ztw_ensembles)
    return evaluate_thresholds(model, datamodule.test_dataloader(), settings.thresholds)


def run_avit(base, datamodule, cfg: DictConfig, run: RunDir) -> list[dict]:
    """A-ViT fine-tuned from the base once per target depth (the budget knob of the thesis's runs)."""
    settings, rows = cfg.method.avit, []
    for depth in settings.target_depths:
        seed_everything(cfg.seed)
        model = AViT(_trainable_copy(base), target_depth=depth, gate_scale=settings.gate_scale,
                     gate_center=settings.gate_center)
        _fit(AViTModule(model, lr=settings.lr, ponder_weight=settings.ponder_weight, prior_weight=settings.prior_weight),
             datamodule, cfg, run, f"avit_depth{depth}", cfg.method.epochs.avit)
        rows += evaluate_avit(model, datamodule.test_dataloader())
    return rows


def patch_compute(maps_by_beta: dict, foreground) -> list[dict]:
    """Mean compute of every patch position on foreground and on background, per budget."""
    rows = []
    for beta, maps in maps_by_beta.items():
        patches = maps[:, -foreground.shape[1]:]
        for p in range(foreground.shape[1]):
            fg = foreground[:, p]
            rows.append({"beta_target": beta, "patch": p, "foreground_share": float(fg.float().mean()),
                         "compute_foreground": float(patches[fg, p].mean()) if fg.any() else float("nan"),
                         "compute_background": float(patches[~fg, p].mean()) if (~fg).any() else float("nan")})
    return rows


def acm_claims(rows: list[dict], maps_by_beta: dict, foreground, claims: DictConfig, mild_beta: float) -> list[dict]:
    """R1-R5 of spec D.b from the comparison's rows; R1 needs MoEfication rows, R5 foreground flags."""
    dense = next(r for r in rows if r["method"] == "dense")
    acm_rows = [r for r in rows if r["method"] == "acm"]
    results = []
    window = [r for r in acm_rows if claims.r1_window[0] <= r["flops"] / dense["flops"] <= claims.r1_window[1]]
    if any(r["method"] == "moefication" for r in rows) and window:
        gaps = [100 * (r["accuracy"] - other) for r in window
                if (other := interpolate(rows, "moefication", r["flops"])) is not None]
        # an ACM point cheaper than every MoEfication point counts as an ACM win (spec D.b)
        results.append(claim("R1", "smallest ACM - MoEfication accuracy gap (pp) at matched FLOPs in the window",
                             min(gaps) if gaps else float("inf"), ">=", claims.r1_min_gap_pp))
    mild = next(r for r in acm_rows if r["beta_target"] == mild_beta)
    results.append(claim("R2a", f"dense accuracy minus ACM accuracy at beta={mild_beta:g} (pp)",
                         100 * (dense["accuracy"] - mild["accuracy"]), "<=", claims.r2_max_gap_pp))
    results.append(claim("R2b", f"ACM FLOPs at beta={mild_beta:g} / dense FLOPs",
                         mild["flops"] / dense["flops"], "<=", claims.r2_max_flops_fraction))
    gaps = [100 * (r["accuracy"] - other) for r in acm_rows if r["beta_target"] in claims.r3_betas
            and (other := interpolate(rows, "acm_static", r["flops"])) is not None]
    if gaps:
        results.append(claim("R3", f"smallest ACM - static accuracy gap (pp) at beta in {list(claims.r3_betas)}",
                             min(gaps), ">=", claims.r3_min_gap_pp))
    results.append(claim("R4", "largest |realised compute - beta_target| over the budgets",
                         max(abs(r["compute"] - r["beta_target"]) for r in acm_rows), "<=", claims.r4_tolerance))
    if foreground is not None:
        aurocs = [foreground_auroc(maps_by_beta[b], foreground) for b in claims.r5_betas]
        results.append(claim("R5", f"smallest AUROC of per-patch compute for the foreground at beta in {list(claims.r5_betas)}",
                             min(aurocs), ">=", claims.r5_min_auroc))
    return results

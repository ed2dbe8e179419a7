"""Runners of Section 5.5 at paper scale (each also runs at smoke scale on the synthetic fixture).

- `run_train`: one classifier (Table 10 column, one seed per run; seeds are a Hydra sweep):
  train, test, write metrics / confusion / per-class / curves / predictions tables, the confusion
  + accuracy-curve figure (Fig. 5.62) and the final weights (`<run>/model.safetensors`);
- `run_cv`: the hyper-parameter grid of Tables 13/16 by k-fold cross-validation on the training
  part (by image, or by sample with the grouped split);
- `run_gradcam`, `run_gradcam_rotation`, `run_vit_attention`, `run_misclassified`,
  `run_fabric_examples`: the figures 5.61-5.67, B1, B2 from a trained model: `method.checkpoint`
  (a `model.safetensors` written by `run_train`) or, when it is null, a model trained first in
  the same run with the training settings of the method config.
"""

from __future__ import annotations

import itertools
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from thesis.ceramics import explain, figures
from thesis.ceramics.data import ThinSectionDataModule, load_image, scan
from thesis.ceramics.metrics import (classification_metrics, confusion, confusion_rows, largest_confusion,
                                     per_class_rows)
from thesis.ceramics.models import parameter_count
from thesis.core.errors import ConfigError
from thesis.core.models import load_weights
from thesis.core.rundir import RunDir
from thesis.core.seeding import seed_everything
from thesis.core.train import fit

log = logging.getLogger(__name__)
MODEL_FILE = "model.safetensors"


# ------------------------------------------------------------------------------------ helpers

def build_model(model_cfg: DictConfig, num_classes: int, **overrides: Any) -> torch.nn.Module:
    return instantiate(model_cfg, num_classes=num_classes, **overrides)


def train_classifier(cfg: DictConfig, run: RunDir, data: ThinSectionDataModule, model_cfg: DictConfig,
                     module_cfg: DictConfig, stage: str, test: bool = True, model: torch.nn.Module | None = None,
                     **trainer_overrides: Any):
    """Seed, build, fit (resuming stage `stage`) and test; returns the module and its metrics."""
    seed_everything(cfg.seed)
    model = model if model is not None else build_model(model_cfg, data.num_classes)
    module = instantiate(module_cfg, model=model, num_classes=data.num_classes)
    metrics = fit(module, data, cfg, run, stage=stage, test=test, **trainer_overrides)
    return module, metrics


def save_model(model: torch.nn.Module, path: Path) -> Path:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}, str(path))
    return path


def evaluation_tables(module, data: ThinSectionDataModule, **keys: Any) -> dict[str, list[dict]]:
    """Per-image predictions, confusion cells and per-class scores of the module's last test."""
    out = module.test_output
    rows = data.test_rows().iloc[: len(out["labels"])]  # trainer.limit_test_batches may stop early
    class_ids = data.class_ids
    predictions = []
    for i, row in rows.iterrows():
        predictions.append({**keys, "file": row["file"], "sample_id": row["sample_id"], "class_id": int(row["class_id"]),
                            "polarisation": row["polarisation"], "magnification": row["magnification"],
                            "pred": class_ids[int(out["preds"][i])], "prob": float(out["probs"][i].max()),
                            "correct": bool(out["preds"][i] == out["labels"][i]),
                            **({"intermediate": bool(row["intermediate"])} if "intermediate" in row else {})})
    matrix = confusion(out["labels"], out["preds"], len(class_ids))
    return {"predictions": predictions, "confusion": confusion_rows(matrix, class_ids, **keys),
            "per_class": [{**keys, **r} for r in per_class_rows(out["labels"], out["preds"], class_ids)],
            "matrix": matrix}


def trained_model(cfg: DictConfig, run: RunDir, data: ThinSectionDataModule, model_cfg: DictConfig,
                  module_cfg: DictConfig, checkpoint: str | None, stage: str, epochs: int | None = None,
                  batch_size: int | None = None) -> torch.nn.Module:
    """The model to explain: weights from `checkpoint`, or trained here (stage `stage`) when null."""
    if checkpoint:
        model = build_model(model_cfg, data.num_classes, init="scratch", checkpoint=None)
        load_weights(model, checkpoint)
    else:
        log.info("no method.checkpoint: training the model first (stage %s)", stage)
        overrides = {"max_epochs": int(epochs)} if epochs else {}
        if batch_size:
            data.batch_size = int(batch_size)
        module, _ = train_classifier(cfg, run, data, model_cfg, module_cfg, stage, test=False, **overrides)
        model = module.model
        save_model(model, run.path / f"{stage}.safetensors")
    return model.eval()


def chosen_samples(data: ThinSectionDataModule, wanted: DictConfig | dict | None, prefer: str = "test"
                   ) -> dict[int, str]:
    """Per class, the configured sample (thesis ids, '/' written '-') when present, else the first
    sample of that class in the `prefer` part (else anywhere)."""
    wanted = {int(k): str(v) for k, v in (OmegaConf.to_container(wanted) if isinstance(wanted, DictConfig)
                                          else (wanted or {})).items()}
    index = data.index
    chosen = {}
    for cls in data.class_ids:
        rows = index[index["class_id"] == cls]
        name = wanted.get(cls)
        if name is not None and name in set(rows["sample_id"]):
            chosen[cls] = name
            continue
        preferred = rows[rows["part"] == prefer] if "part" in rows else rows
        chosen[cls] = str((preferred if len(preferred) else rows)["sample_id"].iloc[0])
    return chosen


def view_rows(data: ThinSectionDataModule, sample: str, magnification: str) -> pd.DataFrame:
    """The PPL and XPL images of `sample` at `magnification` with the lowest k (the same field)."""
    index = data.index
    rows = index[(index["sample_id"] == sample)]
    at = rows[rows["magnification"] == magnification]
    rows = at if len(at) else rows
    k = rows["k"].min()
    return rows[rows["k"] == k].sort_values("polarisation")


def pick(mapping: Any, key: int, default: Any) -> Any:
    if mapping is None:
        return default
    values = OmegaConf.to_container(mapping) if isinstance(mapping, DictConfig) else dict(mapping)
    return values.get(key, values.get(str(key), default))


# ----------------------------------------------------------------------------------- training

def run_train(cfg: DictConfig, run: RunDir) -> dict[str, object]:
    data: ThinSectionDataModule = instantiate(cfg.data)
    data.setup()
    module, fitted = train_classifier(cfg, run, data, cfg.model, cfg.method.module, "train")
    keys = {"model": cfg.method.name, "init": cfg.model.init, "split": data.split}
    tables = evaluation_tables(module, data, **keys)
    out = module.test_output
    scores = classification_metrics(out["labels"], out["preds"], data.num_classes)
    run.write_table("metrics", [{**keys, **scores, "test_images": len(out["labels"])}])
    for name in ("predictions", "confusion", "per_class"):
        run.write_table(name, tables[name])
    run.write_table("curves", [{**keys, **row} for row in module.curve])
    save_model(module.model, run.path / MODEL_FILE)
    figures.confusion_figure(tables["matrix"], data.class_ids, run.figures_dir / "confusion_curves.png",
                             f"{cfg.method.name} ({cfg.model.init}), test", module.curve)
    true, pred, count = largest_confusion(tables["matrix"])
    metrics = {f"test/{k}": v for k, v in scores.items()}
    metrics.update({"train/acc": fitted.get("train/acc"), "model/params": parameter_count(module.model),
                    "confusion/largest_true": data.class_ids[true], "confusion/largest_pred": data.class_ids[pred],
                    "confusion/largest_count": count, "data/test_images": len(out["labels"]),
                    "data/train_images": len(data.parts["train"])})
    return metrics


def run_cv(cfg: DictConfig, run: RunDir) -> dict[str, object]:
    """Grid search by cross-validation on the training part (Tables 13 and 16)."""
    data: ThinSectionDataModule = instantiate(cfg.data)
    data.setup()
    grid = cfg.method.grid
    rows = []
    for lr, wd in itertools.product(grid.lr, grid.weight_decay):
        for fold in range(data.num_folds):
            fold_data = data.variant(fold=fold)
            module_cfg = OmegaConf.merge(cfg.method.module, {"lr": lr, "weight_decay": wd})
            module, _ = train_classifier(cfg, run, fold_data, cfg.model, module_cfg, f"lr{lr:g}_wd{wd:g}_fold{fold}")
            out = module.test_output
            scores = classification_metrics(out["labels"], out["preds"], data.num_classes)
            rows.append({"model": cfg.method.name, "lr": lr, "weight_decay": wd, "fold": fold,
                         "val_images": len(out["labels"]), **scores})
    run.write_table("cv", rows)
    frame = pd.DataFrame(rows)
    summary = frame.groupby(["lr", "weight_decay"])[["acc", "f1"]].agg(["mean", "std"]).reset_index()
    summary.columns = ["lr", "weight_decay", "acc_mean", "acc_std", "f1_mean", "f1_std"]
    run.write_table("cv_summary", summary.assign(model=cfg.method.name).to_dict("records"))
    best = summary.sort_values(["acc_mean", "f1_mean"], ascending=False).iloc[0]
    return {"best/lr": float(best.lr), "best/weight_decay": float(best.weight_decay),
            "best/acc_mean": float(best.acc_mean), "best/f1_mean": float(best.f1_mean),
            "cv/points": len(summary), "cv/folds": data.num_folds, "cv/grouped": data.split == "grouped_by_sample"}


# ---------------------------------------------------------------------------------- analyses

def masks_of(data: ThinSectionDataModule, positions) -> list[np.ndarray | None]:
    return [data.mask(int(p)) for p in positions]


def figure_classes(data: ThinSectionDataModule, groups: DictConfig) -> dict[str, list[int]]:
    """The classes of each figure (`method.figures`: name -> class ids), those present in the data."""
    present = set(data.class_ids)
    return {str(name): [int(c) for c in classes if int(c) in present] for name, classes in groups.items()}


def run_gradcam(cfg: DictConfig, run: RunDir) -> dict[str, object]:
    """Guided Grad-CAM of the predicted class on PPL and XPL of one sample per class (Figs. 5.64, B1)."""
    from thesis.ceramics.synthetic import CODE, CUES

    data: ThinSectionDataModule = instantiate(cfg.data)
    data.setup()
    method = cfg.method
    model = trained_model(cfg, run, data, cfg.model, method.module, method.checkpoint, "train")
    samples = chosen_samples(data, method.samples)
    rows = []
    for figure, classes in figure_classes(data, method.figures).items():
        images, cams, products, titles = [], [], [], []
        for cls in classes:
            sample = samples[cls]
            views = view_rows(data, sample, method.magnification)
            x = data.normalised(views.index)
            result = explain.guided_grad_cam(model, x)
            preds = [data.class_ids[int(t)] for t in result.target]
            images += [figures.to_rgb(xi, data.mean, data.std) for xi in x]
            cams += list(result.cam.numpy())
            products += list(result.product.numpy())
            titles += [f"{cls} {sample} {pol}\npred {p}" for pol, p in zip(views["polarisation"], preds)]
            for i, (pos, row) in enumerate(views.iterrows()):
                record = {"figure": figure, "class_id": cls, "sample_id": sample, "polarisation": row["polarisation"],
                          "magnification": row["magnification"], "pred": preds[i],
                          "prob": float(result.logits[i].softmax(-1).max())}
                mask = data.mask(int(pos))
                if mask is not None:
                    cue = np.isin(mask[..., 0], [CODE[m] for m in CUES.get(cls, ())])
                    record["cue_energy_ratio"] = explain.energy_in_mask(result.cam[i].numpy(), cue)
                rows.append(record)
        if images:
            figures.gradcam_grid(images, cams, products, titles, run.figures_dir / f"gradcam_{figure}.png")
    run.write_table("gradcam", rows)
    frame = pd.DataFrame(rows)
    metrics = {"gradcam/figures": int(frame["figure"].nunique()), "gradcam/images": len(frame),
               "gradcam/correct": float((frame["pred"] == frame["class_id"]).mean())}
    if "cue_energy_ratio" in frame:
        metrics["gradcam/cue_energy_ratio"] = float(frame["cue_energy_ratio"].mean())
    return metrics


def rotation_series(root: Path, index: pd.DataFrame, sample: str) -> pd.DataFrame:
    """The images of one field of `sample` under stage rotation: the (polarisation, magnification)
    with most rotation angles; at 0 degrees the lowest k (the synthetic writer's convention)."""
    rows = index[index["sample_id"] == sample]
    if rows.empty:
        return rows
    counts = rows.groupby(["polarisation", "magnification"])["rotation_deg"].nunique()
    pol, mag = counts.idxmax()
    rows = rows[(rows["polarisation"] == pol) & (rows["magnification"] == mag)]
    return rows.sort_values(["rotation_deg", "k"]).drop_duplicates("rotation_deg")


def run_gradcam_rotation(cfg: DictConfig, run: RunDir) -> dict[str, object]:
    """Grad-CAM along stage-rotation series (Figs. 5.65 calcite TF4, 5.66 quartz TFMcamp1): maps
    turned back to 0 degrees and correlated with the 0-degree map, predictions compared."""
    data: ThinSectionDataModule = instantiate(cfg.data)
    data.setup()
    method = cfg.method
    model = trained_model(cfg, run, data, cfg.model, method.module, method.checkpoint, "train")
    everything = scan(data.root)
    rows = []
    for cls, wanted in ((int(c), str(s)) for c, s in OmegaConf.to_container(method.samples).items()):
        sample = wanted if wanted in set(everything["sample_id"]) else None
        if sample is None:  # the first sample of the class that has a rotation series
            candidates = everything[(everything["class_id"] == cls) & (everything["rotation_deg"] != 0)]
            if candidates.empty:
                log.warning("no rotation series for class %s: skipped", cls)
                continue
            sample = str(candidates["sample_id"].iloc[0])
        series = rotation_series(data.root, everything, sample)
        pixels = np.stack([load_image(data.root / f, data.image_size) for f in series["file"]])
        x = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255.0
        x = (x - torch.tensor(data.mean).view(1, 3, 1, 1)) / torch.tensor(data.std).view(1, 3, 1, 1)
        cam = explain.grad_cam(model, x)
        angles = series["rotation_deg"].tolist()
        back = torch.stack([explain.derotate(c, a) for c, a in zip(cam.cam, angles)])
        disk = explain.central_disk(data.image_size)
        preds = [data.class_ids[int(t)] for t in cam.target]
        for i, angle in enumerate(angles):
            rows.append({"class_id": cls, "sample_id": sample, "rotation_deg": angle, "pred": preds[i],
                         "same_pred": preds[i] == preds[0],
                         "corr_with_0deg": explain.pearson(back[0].numpy(), back[i].numpy(), disk)})
        figures.rotation_grid([figures.to_rgb(xi, data.mean, data.std) for xi in x], cam.cam.numpy(), angles,
                              [str(p) for p in preds], run.figures_dir / f"rotation_class{cls}_{sample}.png",
                              f"class {cls}, sample {sample}")
    run.write_table("rotation", rows)
    frame = pd.DataFrame(rows)
    if frame.empty:
        raise ConfigError("no rotation series found: the data need images with rotation_deg != 0 (metadata.csv)")
    later = frame[frame["rotation_deg"] != 0]
    return {"rotation/series": int(frame["sample_id"].nunique()), "rotation/images": len(frame),
            "rotation/mean_corr": float(later["corr_with_0deg"].mean()),
            "rotation/same_pred": float(later["same_pred"].mean())}


def run_vit_attention(cfg: DictConfig, run: RunDir) -> dict[str, object]:
    """Class-token attention per layer (the thesis's head per class) and per head of the last layer,
    PPL and XPL of one sample per class, plus attention rollout (Figs. 5.67 and B2)."""
    data: ThinSectionDataModule = instantiate(cfg.data)
    data.setup()
    method = cfg.method
    model = trained_model(cfg, run, data, cfg.model, method.module, method.checkpoint, "train")
    prefix, grid = int(model.num_prefix_tokens), explain.grid_of(model)
    samples = chosen_samples(data, method.samples)
    rows = []
    for figure, classes in figure_classes(data, method.figures).items():
        images, by_layer, by_head, names = [], [], [], []
        for cls in classes:
            sample = samples[cls]
            views = view_rows(data, sample, method.magnification)
            x = data.normalised(views.index)
            attention, _ = explain.vit_attention(model, x)
            maps = explain.cls_attention(attention, prefix, grid)          # (L, B, heads, gh, gw)
            layers, heads = maps.shape[0], maps.shape[2]
            head = (int(pick(method.heads, cls, method.default_head)) - 1) % heads  # thesis heads are 1-based
            pols = list(views["polarisation"])
            images += [figures.to_rgb(xi, data.mean, data.std) for xi in x]
            by_layer += [maps[:, b, head].numpy() for b in range(len(pols))]
            by_head += [maps[-1, b].numpy() for b in range(len(pols))]
            names += [f"{cls} {sample} {pol}, head {head + 1}" for pol in pols]
            roll = explain.rollout(attention, prefix, grid)
            entropy = explain.normalised_entropy(maps.flatten(-2)).mean(2)   # (L, B)
            for l in range(layers):
                record = {"figure": figure, "class_id": cls, "sample_id": sample, "layer": l + 1, "head": head + 1,
                          "entropy": float(entropy[l].mean())}
                if len(pols) == 2:
                    record["ppl_xpl_corr"] = explain.pearson(maps[l, 0].mean(0).numpy(), maps[l, 1].mean(0).numpy())
                rows.append(record)
            if len(pols) == 2:
                rows.append({"figure": figure, "class_id": cls, "sample_id": sample, "layer": "rollout", "head": "mean",
                             "ppl_xpl_corr": explain.pearson(roll[0].numpy(), roll[1].numpy())})
        if images:
            layers = by_layer[0].shape[0]
            figures.attention_grid(images, by_layer, names, run.figures_dir / f"attention_{figure}_layers.png",
                                   [f"layer {l + 1}" for l in range(layers)], "class-token attention across layers")
            figures.attention_grid(images, by_head, names, run.figures_dir / f"attention_{figure}_last_layer_heads.png",
                                   [f"head {h + 1}" for h in range(by_head[0].shape[0])],
                                   "class-token attention of the last layer, per head")
    run.write_table("attention", rows)
    frame = pd.DataFrame(rows)
    layered = frame[frame["layer"] != "rollout"].astype({"layer": int})
    by_layer_entropy = layered.groupby("layer")["entropy"].mean()
    metrics = {"attention/entropy_first": float(by_layer_entropy.iloc[0]),
               "attention/entropy_last": float(by_layer_entropy.iloc[-1]),
               "attention/classes": int(frame["class_id"].nunique())}
    if "ppl_xpl_corr" in layered:
        last = layered[layered["layer"] == by_layer_entropy.index[-1]]
        metrics["attention/ppl_xpl_corr_last"] = float(last["ppl_xpl_corr"].mean())
    return metrics


def run_misclassified(cfg: DictConfig, run: RunDir) -> dict[str, object]:
    """Both models on the test part: confusion matrices (Fig. 5.62) and the misclassified images of
    `method.focus_class` (class 2, Fig. 5.63), with where they went."""
    data: ThinSectionDataModule = instantiate(cfg.data)
    data.setup()
    method = cfg.method
    rows, metrics = [], {}
    focus = int(method.focus_class)
    for name, spec in method.models.items():
        model = trained_model(cfg, run, data, cfg.model[name], spec.module, spec.checkpoint, name,
                              spec.get("epochs"), spec.get("batch_size"))
        x_rows = data.test_rows()
        x = data.normalised(data.parts["test"])
        with torch.no_grad():
            preds = torch.cat([model(chunk).argmax(-1) for chunk in x.split(64)]).numpy()
        labels = x_rows["label"].to_numpy()
        matrix = confusion(labels, preds, data.num_classes)
        figures.confusion_figure(matrix, data.class_ids, run.figures_dir / f"confusion_{name}.png", f"{name}, test")
        ids = data.class_ids
        wrong = [(i, r) for i, r in x_rows.iterrows() if r["class_id"] == focus and preds[i] != r["label"]]
        for i, r in x_rows.iterrows():
            rows.append({"model": name, "file": r["file"], "sample_id": r["sample_id"], "class_id": int(r["class_id"]),
                         "pred": ids[int(preds[i])], "correct": bool(preds[i] == r["label"])})
        figures.image_grid([figures.to_rgb(x[i], data.mean, data.std) for i, _ in wrong],
                           [f"{r['sample_id']} {r['polarisation']} {r['magnification']} -> {ids[int(preds[i])]}"
                            for i, r in wrong], run.figures_dir / f"misclassified_class{focus}_{name}.png",
                           title=f"{name}: misclassified class-{focus} test images")
        scores = classification_metrics(labels, preds, data.num_classes)
        metrics.update({f"{name}/{k}": v for k, v in scores.items()})
        focus_total = int((x_rows["class_id"] == focus).sum())
        metrics[f"{name}/class{focus}_errors"] = len(wrong)
        metrics[f"{name}/class{focus}_error_rate"] = len(wrong) / focus_total if focus_total else float("nan")
        into = [ids[int(preds[i])] for i, _ in wrong]
        metrics[f"{name}/class{focus}_to_{method.confused_with}"] = into.count(int(method.confused_with))
        true, pred, count = largest_confusion(matrix)
        metrics[f"{name}/largest_confusion"] = f"{ids[true]}->{ids[pred]} ({count})"
    run.write_table("misclassified", rows)
    return metrics


def run_fabric_examples(cfg: DictConfig, run: RunDir) -> dict[str, object]:
    """PPL and XPL of one sample per fabric class (Fig. 5.61); no model involved."""
    data: ThinSectionDataModule = instantiate(cfg.data)
    data.setup()
    images, titles = [], []
    chosen = chosen_samples(data, cfg.method.samples, prefer="train")
    for cls, sample in chosen.items():
        views = view_rows(data, sample, cfg.method.magnification)
        for pos, row in views.iterrows():
            images.append(figures.to_rgb(data.normalised([pos])[0], data.mean, data.std))
            titles.append(f"{cls} {row['fabric'] or ''} {sample} {row['polarisation']}".strip())
    figures.image_grid(images, titles, run.figures_dir / "fabric_examples.png", columns=4,
                       title="fabric classes, PPL and XPL")
    run.write_table("examples", [{"class_id": c, "sample_id": s} for c, s in chosen.items()])
    return {"examples/classes": len(chosen), "examples/images": len(images)}

"""`ceramics_mini` (spec C.5 b): Section 5.5 in miniature on synthetic thin sections, one seed per run.

1. Table 10 analogue: {ResNet-18, ViT} x {scratch, synthetic_pretrain} trained on the by-image
   split (the thesis's protocol) and on the by-sample split (leak-free); accuracy and macro
   P / R / F1 per condition; the by-image minus by-sample gap estimates the leakage.
   `synthetic_pretrain` = backbone trained once on the procedural-texture task
   (`thesis.ceramics.textures`), frozen, head retrained: the stand-in for ImageNet weights.
2. Confusion: the largest off-diagonal cell of the summed confusion (by-image split) against the
   2 <-> 3 cells; error rate of the intermediate class-2 samples against the other class-2 ones.
3. Grad-CAM localisation on the by-sample test images: energy-in-mask ratio and pointing game
   for the class-discriminative mask and for the distractor mask, trained vs random-init ResNet.
4. Rotation: Grad-CAM along rendered stage rotations of test fields (calcite, quartz), turned
   back to 0 degrees and correlated; predictions kept; CAM energy on extinct vs bright quartz.
5. ViT attention: CLS -> patch entropy per layer, last-layer attention (and rollout) in the cue
   mask, PPL vs XPL attention of the same field.
The claims and their thresholds are in the method config, fixed before the first run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from thesis.ceramics import explain, figures
from thesis.ceramics.data import ThinSectionDataModule
from thesis.ceramics.metrics import classification_metrics, largest_confusion
from thesis.ceramics.runner import build_model, evaluation_tables, train_classifier
from thesis.ceramics.synthetic import CODE, CUES, DISTRACTORS, View, config_from, field_views, render, sections, to_uint8
from thesis.ceramics.textures import NUM_CLASSES as TEXTURE_CLASSES
from thesis.ceramics.textures import TextureDataset
from thesis.core.claims import claim, claim_metrics
from thesis.core.data import training_loader
from thesis.core.rundir import RunDir
from thesis.core.seeding import seed_everything
from thesis.core.train import fit

log = logging.getLogger(__name__)
IMAGE_SPLIT, SAMPLE_SPLIT = "image_random_80_20", "grouped_by_sample"


# --------------------------------------------------------------------------- texture pretraining

class TextureData:
    """A minimal datamodule over `TextureDataset` (training only)."""

    def __init__(self, count: int, size: int, seed: int, batch_size: int):
        self.dataset = TextureDataset(count, size, seed)
        self.batch_size = batch_size

    def train_dataloader(self):
        return training_loader(self.dataset, self.batch_size, 0)


def _texture_module(data: TextureData):
    import lightning as L

    class Wrapped(L.LightningDataModule):
        def train_dataloader(self):
            return data.train_dataloader()

    return Wrapped()


def pretrain_dir(cfg: DictConfig, arch: str) -> RunDir:
    what = {"model": OmegaConf.to_container(cfg.model[arch], resolve=True),
            "pretrain": OmegaConf.to_container(cfg.method.pretrain, resolve=True),
            "image_size": cfg.data.image_size}
    digest = hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:10]
    return RunDir(Path(cfg.paths.output_dir) / ".stages" / f"ceramics_pretrain_{arch}_{digest}")


def synthetic_pretrain(cfg: DictConfig, arch: str) -> tuple[Path, dict]:
    """The texture-pretrained backbone of `arch` in timm's hub layout (trained once, then reused:
    one pretrained model for every seed, as one set of ImageNet weights serves every seed)."""
    from timm.models import save_for_hf

    settings = cfg.method.pretrain
    stages = pretrain_dir(cfg, arch)
    folder = stages.path / "model"
    if (folder / "config.json").is_file() and stages.done and not cfg.force:
        return folder, stages.read_metrics()
    if cfg.force:
        stages.clear()
    seed_everything(int(settings.seed))
    model_cfg = cfg.model[arch]
    model = build_model(model_cfg, TEXTURE_CLASSES, init="scratch", checkpoint=None)
    data = TextureData(int(settings.images), int(cfg.data.image_size), int(settings.seed), int(settings.batch_size))
    module = instantiate(settings.module, model=model, num_classes=TEXTURE_CLASSES)
    result = fit(module, _texture_module(data), cfg, stages, stage="pretrain", test=False,
                 max_epochs=int(settings.epochs), limit_val_batches=0)
    model_args = OmegaConf.to_container(model_cfg.get("model_args", {}) or {}, resolve=True)
    save_for_hf(model.eval(), str(folder), model_args=model_args, safe_serialization=True)
    metrics = {"train_acc": result.get("train/acc"), "epochs": int(settings.epochs), "images": int(settings.images)}
    stages.write_metrics(metrics)
    return folder, metrics


# ------------------------------------------------------------------------------------- helpers

def mask_sets(mask: np.ndarray, class_id: int) -> dict[str, np.ndarray]:
    codes = mask[..., 0]
    return {"cue": np.isin(codes, [CODE[m] for m in CUES[class_id]]),
            "distractor": np.isin(codes, [CODE[m] for m in DISTRACTORS])}


def _usable(mask: np.ndarray, limits: DictConfig) -> bool:
    share = float(mask.mean())
    return limits.min_share <= share <= limits.max_share


def localisation_rows(model: torch.nn.Module, data: ThinSectionDataModule, positions: np.ndarray, name: str,
                      limits: DictConfig, batch: int = 32) -> list[dict]:
    """Per image and mask: energy-in-mask ratio of Grad-CAM and guided Grad-CAM (true class) and
    the pointing game."""
    rows = []
    tolerance = int(round(limits.pointing_tolerance * data.image_size))
    for start in range(0, len(positions), batch):
        chunk = positions[start:start + batch]
        x = data.normalised(chunk)
        labels = torch.tensor(data.index["label"].to_numpy()[chunk])
        result = explain.guided_grad_cam(model, x, labels)
        saliency = result.saliency.numpy()
        for i, pos in enumerate(chunk):
            row = data.index.iloc[int(pos)]
            for kind, mask in mask_sets(data.mask(int(pos)), int(row["class_id"])).items():
                if not _usable(mask, limits):
                    continue
                rows.append({"model": name, "mask": kind, "file": row["file"], "class_id": int(row["class_id"]),
                             "polarisation": row["polarisation"], "share": float(mask.mean()),
                             "ratio": explain.energy_in_mask(result.cam[i].numpy(), mask),
                             "guided_ratio": explain.energy_in_mask(saliency[i], mask),
                             "pointing": explain.pointing_hit(result.cam[i].numpy(), mask, tolerance),
                             "correct": bool(int(result.logits[i].argmax()) == int(labels[i]))})
    return rows


def normalise_uint8(images: list[np.ndarray], data: ThinSectionDataModule) -> torch.Tensor:
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255.0
    return (x - torch.tensor(data.mean).view(1, 3, 1, 1)) / torch.tensor(data.std).view(1, 3, 1, 1)


def rotation_study(model: torch.nn.Module, data: ThinSectionDataModule, generator, settings: DictConfig,
                   run: RunDir) -> tuple[list[dict], list[dict]]:
    """Rendered stage-rotation series of test fields; Grad-CAM of the predicted class."""
    test = data.index.iloc[data.parts["test"]]
    angles = [float(a) for a in settings.angles]
    disk = explain.central_disk(data.image_size)
    base = field_views(generator)[("10X", 0)]
    rows, extinct_rows = [], []
    for cls in settings.classes:
        samples = sorted(test[test["class_id"] == int(cls)]["sample_id"].unique())[: int(settings.samples_per_class)]
        for sid, section in sections(generator, samples).items():
            views = [render(section, View(base.centre, base.width, a), data.image_size, generator.noise) for a in angles]
            x = normalise_uint8([to_uint8(v[settings.polarisation]) for v in views], data)
            cam = explain.grad_cam(model, x)
            back = torch.stack([explain.derotate(c, a) for c, a in zip(cam.cam, angles)]).numpy()
            preds = [data.class_ids[int(t)] for t in cam.target]
            for i, angle in enumerate(angles):
                rows.append({"class_id": int(cls), "sample_id": sid, "rotation_deg": angle, "pred": preds[i],
                             "same_pred": preds[i] == preds[0],
                             "corr_with_0deg": explain.pearson(back[0], back[i], disk)})
                code, level = views[i]["code"], views[i]["brightness"]
                quartz = code == CODE["quartz"]
                dark, bright = quartz & (level < settings.extinct_below), quartz & (level > settings.bright_above)
                if dark.sum() >= 4 and bright.sum() >= 4:
                    extinct_rows.append({"class_id": int(cls), "sample_id": sid, "rotation_deg": angle,
                                         "cam_extinct": float(cam.cam[i].numpy()[dark].mean()),
                                         "cam_bright": float(cam.cam[i].numpy()[bright].mean())})
            if sid == samples[0]:
                figures.rotation_grid([figures.to_rgb(xi, data.mean, data.std) for xi in x], cam.cam.numpy(), angles,
                                      [str(p) for p in preds], run.figures_dir / f"rotation_class{cls}_{sid}.png",
                                      f"class {cls} ({sid}), {settings.polarisation}, ResNet Grad-CAM")
    return rows, extinct_rows


def attention_study(model: torch.nn.Module, data: ThinSectionDataModule, positions: np.ndarray, name: str,
                    limits: DictConfig) -> tuple[list[dict], list[dict], list[dict]]:
    """Entropy per layer, cue-mask ratios of last-layer attention and rollout, PPL-XPL correlation."""
    prefix, grid = int(model.num_prefix_tokens), explain.grid_of(model)
    entropy_rows, mask_rows, pair_rows = [], [], []
    last_maps: dict[str, np.ndarray] = {}
    for start in range(0, len(positions), 32):
        chunk = positions[start:start + 32]
        attention, _ = explain.vit_attention(model, data.normalised(chunk))
        maps = explain.cls_attention(attention, prefix, grid)            # (L, B, H, gh, gw)
        entropy = explain.normalised_entropy(maps.flatten(-2)).mean(2)   # (L, B)
        last = explain.upsample(maps[-1].mean(1), data.image_size).numpy()
        roll = explain.upsample(explain.rollout(attention, prefix, grid), data.image_size).numpy()
        for i, pos in enumerate(chunk):
            row = data.index.iloc[int(pos)]
            for layer in range(maps.shape[0]):
                entropy_rows.append({"model": name, "file": row["file"], "layer": layer + 1,
                                     "entropy": float(entropy[layer, i])})
            cue = mask_sets(data.mask(int(pos)), int(row["class_id"]))["cue"]
            if _usable(cue, limits):
                mask_rows.append({"model": name, "file": row["file"], "class_id": int(row["class_id"]),
                                  "last_layer_ratio": explain.energy_in_mask(last[i], cue),
                                  "rollout_ratio": explain.energy_in_mask(roll[i], cue)})
            last_maps[row["file"]] = maps[-1, i].mean(0).numpy()
    index = data.index
    for f, amap in last_maps.items():
        if "__PPL__" in f:
            other = f.replace("__PPL__", "__XPL__")
            if other in last_maps:
                pair_rows.append({"model": name, "file": f, "ppl_xpl_corr": explain.pearson(amap, last_maps[other])})
    del index
    return entropy_rows, mask_rows, pair_rows


def _error_gap(predictions: pd.DataFrame, arch: str) -> float:
    part = predictions[(predictions["arch"] == arch) & (predictions["class_id"] == 2)]
    if "intermediate" not in part or part["intermediate"].sum() == 0 or (~part["intermediate"]).sum() == 0:
        return float("nan")
    err = 1 - part.groupby("intermediate")["correct"].mean()
    return float(err.loc[True] - err.loc[False])


# ------------------------------------------------------------------------------------------ run

class Clock:
    """Wall and CPU seconds per named part of the run (reported as time/<part>_s, cpu/<part>_s)."""

    def __init__(self) -> None:
        self.times: dict[str, float] = {}
        self._last = (time.perf_counter(), time.process_time())

    def lap(self, name: str) -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        self.times[f"time/{name}_s"] = round(wall - self._last[0], 2)
        self.times[f"cpu/{name}_s"] = round(cpu - self._last[1], 2)
        self._last = (wall, cpu)
        log.info("%s: %.1f s", name, self.times[f"time/{name}_s"])


def run_ceramics_mini(cfg: DictConfig, run: RunDir) -> dict[str, object]:
    method = cfg.method
    clock = Clock()
    data: ThinSectionDataModule = instantiate(cfg.data)
    data.setup()
    clock.lap("data")
    generator = config_from(OmegaConf.to_container(cfg.data.synthetic, resolve=True))
    metrics: dict[str, object] = {"data/images": len(data.index), "data/samples": int(data.index["sample_id"].nunique())}

    pretrained = {}
    for arch in method.archs:
        if "synthetic_pretrain" in method.inits:
            pretrained[arch], info = synthetic_pretrain(cfg, arch)
            metrics[f"pretrain/{arch}/train_acc"] = info.get("train_acc")
    clock.lap("pretrain")

    rows, confusions, curves, predictions, models, panels = [], [], [], [], {}, {}
    matrices: dict[tuple[str, str, str], np.ndarray] = {}
    for split in method.splits:
        split_data = data.variant(split=split)
        for arch in method.archs:
            for init in method.inits:
                settings = method.training[arch][init]
                split_data.batch_size = int(settings.batch_size)
                model = build_model(cfg.model[arch], data.num_classes, init=init,
                                    checkpoint=str(pretrained[arch]) if init == "synthetic_pretrain" else None)
                module, _ = train_classifier(cfg, run, split_data, cfg.model[arch], settings.module,
                                             f"{arch}_{init}_{split}", model=model, max_epochs=int(settings.epochs))
                keys = {"arch": arch, "init": init, "split": split}
                tables = evaluation_tables(module, split_data, **keys)
                out = module.test_output
                scores = classification_metrics(out["labels"], out["preds"], data.num_classes)
                rows.append({**keys, **scores, "test_images": len(out["labels"])})
                confusions += tables["confusion"]
                predictions += tables["predictions"]
                curves += [{**keys, **r} for r in module.curve]
                matrices[(arch, init, split)] = tables["matrix"]
                clock.lap(f"train_{arch}_{init}_{split}")
                models[(arch, init, split)] = module.model.eval()
                metrics.update({f"{arch}/{init}/{split}/{k}": v for k, v in scores.items()})
                panels.setdefault(split, []).append((f"{arch} {init}, {split}", tables["matrix"], module.curve))
    for split, parts in panels.items():
        figures.confusion_panels(parts, data.class_ids, run.figures_dir / f"confusion_{split}.png")
    run.write_table("metrics", rows)
    run.write_table("confusion", confusions)
    run.write_table("curves", curves)
    run.write_table("predictions", predictions)
    frame, preds = pd.DataFrame(rows), pd.DataFrame(predictions)

    # explanations on the leak-free split's test images
    explain_split = method.explain_split
    test = data.variant(split=explain_split)
    positions = test.parts["test"]
    at_mag = positions[test.index["magnification"].to_numpy()[positions] == method.explain_magnification]
    resnet, vit = method.explain_models.resnet, method.explain_models.vit
    loc_rows = []
    for name in (resnet, *method.explain_models.get("extra_resnets", [])):
        arch, init = name.split("/")
        loc_rows += localisation_rows(models[(arch, init, explain_split)], test, at_mag, name, method.localisation)
    seed_everything(cfg.seed)
    random_model = build_model(cfg.model[resnet.split("/")[0]], data.num_classes, init="scratch", checkpoint=None).eval()
    loc_rows += localisation_rows(random_model, test, at_mag, "random_init", method.localisation)
    clock.lap("localisation")
    run.write_table("localisation", loc_rows)
    loc = pd.DataFrame(loc_rows)
    summary = loc.groupby(["model", "mask"])[["ratio", "guided_ratio", "pointing"]].mean().reset_index()
    run.write_table("localisation_summary", summary.to_dict("records"))
    for r in summary.itertuples():
        metrics.update({f"loc/{r.model}/{r.mask}/ratio": r.ratio, f"loc/{r.model}/{r.mask}/guided_ratio": r.guided_ratio,
                        f"loc/{r.model}/{r.mask}/pointing": r.pointing})

    resnet_model = models[(*resnet.split("/"), explain_split)]
    rot_rows, extinct_rows = rotation_study(resnet_model, test, generator, method.rotation, run)
    clock.lap("rotation")
    run.write_table("rotation", rot_rows)
    run.write_table("extinct_quartz", extinct_rows)
    rot = pd.DataFrame(rot_rows)
    turned = rot[rot["rotation_deg"] != 0]
    ext = pd.DataFrame(extinct_rows)
    extinct_ratio = float(ext["cam_extinct"].mean() / ext["cam_bright"].mean()) if len(ext) else float("nan")

    vit_model = models[(*vit.split("/"), explain_split)]
    ent_rows, att_rows, pair_rows = attention_study(vit_model, test, at_mag, vit, method.localisation)
    entropy = pd.DataFrame(ent_rows).groupby("layer")["entropy"].mean()
    run.write_table("attention_entropy", [{"model": vit, "layer": int(l), "entropy": float(e)} for l, e in entropy.items()])
    run.write_table("attention_mask", att_rows)
    run.write_table("attention_ppl_xpl", pair_rows)
    att = pd.DataFrame(att_rows)
    pairs = pd.DataFrame(pair_rows)

    clock.lap("attention")
    write_figures(cfg, run, test, models, resnet_model, vit_model, preds, summary, rot, entropy)
    clock.lap("figures")

    # claims (thresholds in the method config, fixed before the first run)
    limits = method.claims
    image = frame[frame["split"] == IMAGE_SPLIT].set_index(["arch", "init"])["acc"]
    grouped = frame[frame["split"] == SAMPLE_SPLIT].set_index(["arch", "init"])["acc"]
    gap = float((image - grouped).mean()) if len(grouped) and len(image) else float("nan")
    summed = sum(m for (a, i, s), m in matrices.items() if s == method.confusion_split)
    ids = data.class_ids
    a, b = ids.index(2), ids.index(3)
    off = summed.copy()
    np.fill_diagonal(off, -1)
    cell23 = max(int(summed[a, b]), int(summed[b, a]))
    off[a, b] = off[b, a] = -1
    true, pred, _ = largest_confusion(summed)
    gaps = [_error_gap(preds, arch) for arch in method.archs]
    cue = lambda model, kind="cue": float(summary.set_index(["model", "mask"]).loc[(model, kind), "ratio"])  # noqa: E731
    results = [
        claim("T1", "ResNet: synthetic_pretrain minus scratch test accuracy (by-image split)",
              image[("resnet", "synthetic_pretrain")] - image[("resnet", "scratch")], ">=", limits.min_pretrain_gain),
        claim("T2", "ViT: synthetic_pretrain minus scratch test accuracy (by-image split)",
              image[("vit", "synthetic_pretrain")] - image[("vit", "scratch")], ">=", limits.min_pretrain_gain),
        claim("T3", "ResNet scratch minus ViT scratch test accuracy (by-image split)",
              image[("resnet", "scratch")] - image[("vit", "scratch")], ">=", limits.min_cnn_gain),
        claim("G1", "by-image minus by-sample test accuracy, mean over the four conditions (leakage)",
              gap, ">=", limits.min_split_gap),
        claim("C1", "largest 2<->3 confusion cell minus the largest other off-diagonal cell (summed confusion)",
              cell23 - int(off.max()), ">=", limits.min_confusion_margin),
        claim("C2", "error rate of intermediate minus other class-2 test images, lower of the two architectures",
              float(np.nanmin(gaps)) if not all(np.isnan(gaps)) else float("nan"), ">=", limits.min_intermediate_gap),
        claim("L1", f"energy-in-mask ratio of Grad-CAM on the class cue ({resnet})", cue(resnet), ">=", limits.min_cue_ratio),
        claim("L2", f"cue minus distractor energy-in-mask ratio ({resnet})",
              cue(resnet) - cue(resnet, "distractor"), ">=", limits.min_cue_over_distractor),
        claim("L3", f"cue ratio of {resnet} minus that of a random-init ResNet", cue(resnet) - cue("random_init"),
              ">=", limits.min_cue_over_random),
        claim("R1", "Pearson correlation of de-rotated Grad-CAM with the 0-degree map (mean over 15-90 deg)",
              float(turned["corr_with_0deg"].mean()), ">=", limits.min_rotation_corr),
        claim("R2", "share of rotated fields whose prediction equals the 0-degree one",
              float(turned["same_pred"].mean()), ">=", limits.min_same_prediction),
        claim("R3", "mean Grad-CAM on extinct quartz / on bright quartz (XPL)", extinct_ratio, "<=",
              limits.max_extinct_ratio),
        claim("A1", f"CLS-attention entropy, last minus first layer ({vit})",
              float(entropy.iloc[-1] - entropy.iloc[0]), "<=", limits.max_entropy_change),
        claim("A2", f"energy-in-mask ratio of last-layer CLS attention on the class cue ({vit})",
              float(att["last_layer_ratio"].mean()) if len(att) else float("nan"), ">=", limits.min_attention_ratio),
        claim("A3", f"Pearson correlation of last-layer attention, PPL vs XPL of the same field ({vit})",
              float(pairs["ppl_xpl_corr"].mean()) if len(pairs) else float("nan"), ">=", limits.min_ppl_xpl_corr),
    ]
    run.write_table("claims", results)
    metrics.update(claim_metrics(results))
    metrics.update({"split_gap/mean": gap, "confusion/largest": f"{ids[true]}->{ids[pred]}",
                    "rotation/mean_corr": float(turned["corr_with_0deg"].mean()), "quartz/extinct_ratio": extinct_ratio,
                    "attention/entropy_first": float(entropy.iloc[0]), "attention/entropy_last": float(entropy.iloc[-1])})
    if len(att):
        metrics["attention/rollout_ratio"] = float(att["rollout_ratio"].mean())
    metrics.update(clock.times)
    return metrics


# ---------------------------------------------------------------------------------------- figures

def write_figures(cfg, run, data, models, resnet_model, vit_model, preds, summary, rot, entropy) -> None:
    """The run's PNGs: examples (5.61), misclassified class 2 (5.63), Grad-CAM per class (5.64, B1),
    ViT attention (5.67, B2) and a summary of the numbers behind the claims."""
    method = cfg.method
    index, test = data.index, data.index.iloc[data.parts["test"]]
    mag = method.explain_magnification
    chosen = {}
    for cls in data.class_ids:
        rows = test[(test["class_id"] == cls) & (test["magnification"] == mag) & (test["k"] == 0)]
        if len(rows):
            chosen[cls] = rows.sort_values("polarisation").index.tolist()
    if method.get("figure_classes"):
        chosen = {c: p for c, p in chosen.items() if c in set(method.figure_classes)}
    images, titles = [], []
    for cls, pos in chosen.items():
        for p in pos:
            images.append(figures.to_rgb(data.normalised([p])[0]))
            titles.append(f"{cls} {index.at[p, 'fabric']} {index.at[p, 'polarisation']}")
    figures.image_grid(images, titles, run.figures_dir / "fabric_examples.png", columns=4,
                       title="synthetic fabrics, PPL and XPL (10X)")
    for pol in ("PPL", "XPL"):
        pos = [p for ps in chosen.values() for p in ps if index.at[p, "polarisation"] == pol]
        if not pos:
            continue
        x = data.normalised(pos)
        result = explain.guided_grad_cam(resnet_model, x)
        figures.gradcam_grid([figures.to_rgb(xi) for xi in x], result.cam.numpy(), result.product.numpy(),
                             [f"class {index.at[p, 'class_id']}, pred {data.class_ids[int(t)]}" for p, t in zip(pos, result.target)],
                             run.figures_dir / f"gradcam_{pol}.png")
    prefix, grid = int(vit_model.num_prefix_tokens), explain.grid_of(vit_model)
    for cls in [c for c in method.attention_classes if c in chosen]:
        x = data.normalised(chosen[cls])
        attention, _ = explain.vit_attention(vit_model, x)
        maps = explain.cls_attention(attention, prefix, grid).mean(2)      # heads averaged: (L, B, gh, gw)
        figures.attention_grid([figures.to_rgb(xi) for xi in x], [maps[:, b].numpy() for b in range(len(x))],
                               [index.at[p, "polarisation"] for p in chosen[cls]],
                               run.figures_dir / f"attention_class{cls}.png",
                               [f"layer {l + 1}" for l in range(maps.shape[0])], f"class {cls}: CLS attention, heads averaged")
    for arch in method.archs:
        part = preds[(preds["arch"] == arch) & (preds["split"] == method.confusion_split) & (preds["class_id"] == 2) & ~preds["correct"]]
        part = part.drop_duplicates("file").head(12)
        lookup = {f: i for i, f in enumerate(index["file"])}
        shown = [lookup[f] for f in part["file"] if f in lookup]
        if shown:
            figures.image_grid([figures.to_rgb(xi) for xi in data.normalised(shown)],
                               [f"{r.sample_id} {r.polarisation} {r.magnification} -> {r.pred}" for r in part.itertuples()
                                if r.file in lookup], run.figures_dir / f"misclassified_class2_{arch}.png",
                               title=f"{arch}: misclassified class-2 test images ({method.confusion_split})")
    fig, axes = figures.plt.subplots(1, 3, figsize=(11, 3.2), constrained_layout=True)
    pivot = summary.pivot(index="model", columns="mask", values="ratio")
    pivot.plot.bar(ax=axes[0], rot=0)
    axes[0].axhline(1.0, color="grey", lw=0.8, ls="--")
    axes[0].set_ylabel("energy-in-mask ratio (Grad-CAM)")
    rot.groupby("rotation_deg")["corr_with_0deg"].mean().plot(ax=axes[1], marker="o")
    axes[1].set_xlabel("stage rotation (deg)")
    axes[1].set_ylabel("corr. with 0-deg Grad-CAM")
    entropy.plot(ax=axes[2], marker="o")
    axes[2].set_xlabel("ViT layer")
    axes[2].set_ylabel("normalised CLS-attention entropy")
    figures._save(fig, run.figures_dir / "summary.png", tight=False)

"""Thin-section images in the layout of spec C.5, their splits, folds and the datamodule.

Layout (real data and the synthetic writer alike):

    root/<class_id>/<sample_id>__<PPL|XPL>__<2.5X|10X>__<k>.png
    root/metadata.csv        one row per image (file or sample_id+polarisation+magnification+k) or per
                             sample (sample_id), columns among sample_id, site, class_id, fabric,
                             polarisation, magnification, rotation_deg
    root/_masks/<class_id>/<same name>.png   optional per-pixel masks (synthetic data only)

Sample ids are file-safe (thesis ids such as "B1/14" are written "B1-14"). Class folders are the
fabric numbers 1-10 (labels are their ranks). Images with a non-zero `rotation_deg` belong to
stage-rotation series (Figs. 5.65-5.66) and are left out of training and testing unless
`include_rotated`.

Splits (`split`): `image_random_80_20` puts 20 % of the images of every class in the test set,
image by image, as the thesis did (images of one section can fall on both sides);
`grouped_by_sample` puts 20 % of the samples of every class in the test set with all their
images (no sample on both sides). Cross-validation (`fold`, `num_folds`) splits the training part
again the same way: by image, or by sample for the grouped split, so no fold shares a sample with
another. Split seeds are fixed across run seeds: seeds vary the training, not the test set.
"""

from __future__ import annotations

import copy
import logging
import re
from pathlib import Path
from typing import Sequence

import lightning as L
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from thesis.core.data import training_loader
from thesis.core.errors import ConfigError, DataNotFoundError

log = logging.getLogger(__name__)

FILE_PATTERN = re.compile(r"^(?P<sample_id>.+?)__(?P<polarisation>PPL|XPL)__(?P<magnification>2\.5X|10X)__(?P<k>\d+)\.png$")
SPLITS = ("image_random_80_20", "grouped_by_sample")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PREPARE_HINT = ("the ceramic thin sections are private (no URL in the thesis): place them as "
                "<root>/<class_id>/<sample_id>__<PPL|XPL>__<2.5X|10X>__<k>.png with metadata.csv "
                "(thesis/ceramics/README.md), or set data.root")


# --------------------------------------------------------------------------------------- index

def scan(root: str | Path) -> pd.DataFrame:
    """One row per image: file (relative), class_id, sample_id, polarisation, magnification, k,
    site, fabric, rotation_deg (+ any other metadata column), label (rank of class_id)."""
    root = Path(root)
    if not root.is_dir():
        raise DataNotFoundError(f"thin-section directory {root} not found: {PREPARE_HINT}")
    class_dirs = sorted((d for d in root.iterdir() if d.is_dir() and d.name.isdigit()), key=lambda d: int(d.name))
    rows = []
    for folder in class_dirs:
        for path in sorted(folder.glob("*.png")):
            match = FILE_PATTERN.match(path.name)
            if match is None:
                raise DataNotFoundError(f"{path} does not follow <sample_id>__<PPL|XPL>__<2.5X|10X>__<k>.png: "
                                        "rename it or move it out of the class folders")
            rows.append({"file": f"{folder.name}/{path.name}", "class_id": int(folder.name),
                         **match.groupdict()})
    if not rows:
        raise DataNotFoundError(f"no images under {root}/<class_id>/*.png: {PREPARE_HINT}")
    index = pd.DataFrame(rows)
    index["k"] = index["k"].astype(int)
    index = _with_metadata(index, root / "metadata.csv")
    by_sample = index.groupby("sample_id")["class_id"].nunique()
    if (by_sample > 1).any():
        bad = by_sample[by_sample > 1].index[0]
        raise DataNotFoundError(f"sample {bad!r} has images in several class folders under {root}: one class per sample")
    classes = sorted(index["class_id"].unique())
    index["label"] = index["class_id"].map({c: i for i, c in enumerate(classes)})
    return index.reset_index(drop=True)


def _with_metadata(index: pd.DataFrame, path: Path) -> pd.DataFrame:
    defaults = {"site": "unknown", "fabric": "", "rotation_deg": 0.0}
    if not path.is_file():
        log.warning("%s not found: sites unknown, every image taken at rotation 0", path)
        return index.assign(**defaults)
    meta = pd.read_csv(path)
    if "sample_id" in meta.columns:
        meta["sample_id"] = meta["sample_id"].astype(str)
    if "file" in meta.columns:
        keys = ["file"]
    elif {"sample_id", "polarisation", "magnification", "k"} <= set(meta.columns):
        keys = ["sample_id", "polarisation", "magnification", "k"]
    elif "sample_id" in meta.columns:
        keys = ["sample_id"]
    else:
        raise DataNotFoundError(f"{path} has neither a file nor a sample_id column")
    meta = meta.drop_duplicates(subset=keys)
    extra = [c for c in meta.columns if c not in index.columns or c in keys]
    merged = index.merge(meta[extra], on=keys, how="left")
    if "class_id" in meta.columns:
        check = index.merge(meta[keys + ["class_id"]], on=keys, how="inner", suffixes=("", "_meta"))
        wrong = check[check["class_id"] != check["class_id_meta"]]
        if len(wrong):
            row = wrong.iloc[0]
            raise DataNotFoundError(f"{row['file']} lies in class folder {row['class_id']} but {path} gives "
                                    f"class {row['class_id_meta']}: fix one of them")
    for column, value in defaults.items():
        merged[column] = merged[column].fillna(value) if column in merged else value
    merged["rotation_deg"] = merged["rotation_deg"].astype(float)
    return merged


# -------------------------------------------------------------------------------------- splits

def _shuffled(values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return values[rng.permutation(len(values))]


def split_positions(index: pd.DataFrame, split: str, test_fraction: float = 0.2, seed: int = 0
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Row positions of the training and test parts: per class, `test_fraction` of the images
    (`image_random_80_20`) or of the samples with all their images (`grouped_by_sample`)."""
    if split not in SPLITS:
        raise ConfigError(f"data.split={split!r}: use one of {', '.join(SPLITS)}")
    rng = np.random.default_rng(seed)
    test: list[int] = []
    for cls in sorted(index["class_id"].unique()):
        rows = np.flatnonzero(index["class_id"].to_numpy() == cls)
        if split == "image_random_80_20":
            rows = _shuffled(rows, rng)
            n = int(round(test_fraction * len(rows)))
            test += rows[:n].tolist()
        else:
            samples = _shuffled(np.array(sorted(index["sample_id"].iloc[rows].unique())), rng)
            n = int(round(test_fraction * len(samples)))
            n = max(n, 1) if len(samples) >= 2 and test_fraction > 0 else n
            chosen = set(samples[:n].tolist())
            test += [r for r in rows if index["sample_id"].iat[r] in chosen]
    test_arr = np.sort(np.asarray(test, dtype=np.int64))
    train_arr = np.setdiff1d(np.arange(len(index)), test_arr)
    return train_arr, test_arr


def fold_positions(index: pd.DataFrame, positions: np.ndarray, num_folds: int, grouped: bool, seed: int = 0
                   ) -> list[np.ndarray]:
    """`num_folds` disjoint parts of `positions`, stratified by class: images dealt round-robin
    per class, or whole samples dealt round-robin per class when `grouped`."""
    if num_folds < 2:
        raise ConfigError(f"data.num_folds={num_folds}: cross-validation needs at least 2 folds")
    rng = np.random.default_rng([seed, 7])
    folds: list[list[int]] = [[] for _ in range(num_folds)]
    part = index.iloc[positions]
    start = 0
    for cls in sorted(part["class_id"].unique()):
        rows = positions[part["class_id"].to_numpy() == cls]
        if grouped:
            samples = _shuffled(np.array(sorted(index["sample_id"].iloc[rows].unique())), rng)
            owner = {s: (start + i) % num_folds for i, s in enumerate(samples)}
            for r in rows:
                folds[owner[index["sample_id"].iat[r]]].append(int(r))
            start += len(samples)
        else:
            for i, r in enumerate(_shuffled(rows, rng)):
                folds[(start + i) % num_folds].append(int(r))
            start += len(rows)
    return [np.sort(np.asarray(f, dtype=np.int64)) for f in folds]


# ------------------------------------------------------------------------------------- images

def load_image(path: str | Path, size: int) -> np.ndarray:
    """(size, size, 3) uint8: the centre square of the image, resized (antialiased)."""
    from PIL import Image

    with Image.open(path) as image:
        image = image.convert("RGB")
        w, h = image.size
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        image = image.crop((left, top, left + side, top + side))
        if side != size:
            image = image.resize((size, size), Image.BILINEAR)
        return np.asarray(image, dtype=np.uint8)


def load_mask(root: str | Path, file: str) -> np.ndarray | None:
    """The synthetic per-pixel mask of an image (H, W, 3 uint8), or None when there is none."""
    from PIL import Image

    path = Path(root) / "_masks" / file
    if not path.is_file():
        return None
    with Image.open(path) as mask:
        return np.asarray(mask.convert("RGB"), dtype=np.uint8)


class Augment:
    """Training augmentation of the thesis (Sec. 5.5): random crops, flips along both axes and
    colour jitter, on (3, S, S) float tensors in [0, 1], drawn from torch's global generator."""

    def __init__(self, crop_scale: Sequence[float] = (0.5, 1.0), jitter: float = 0.2):
        self.crop_scale, self.jitter = tuple(crop_scale), jitter

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-1]
        lo, hi = self.crop_scale
        if hi > 0 and lo < 1:
            area = float(torch.empty(()).uniform_(lo, hi))
            side = max(4, int(round(size * area ** 0.5)))
            top, left = (int(torch.randint(0, size - side + 1, ())) for _ in range(2))
            x = x[:, top:top + side, left:left + side]
            if side != size:
                x = F.interpolate(x[None], size=(size, size), mode="bilinear", align_corners=False)[0]
        if torch.rand(()) < 0.5:
            x = x.flip(-1)
        if torch.rand(()) < 0.5:
            x = x.flip(-2)
        if self.jitter > 0:
            b, c, s = (1 + (torch.rand(3) * 2 - 1) * self.jitter).tolist()
            x = x * b
            mean = x.mean()
            x = (x - mean) * c + mean
            grey = x.mean(0, keepdim=True)
            x = (x - grey) * s + grey
            x = x.clamp(0, 1)
        return x


class ThinSectionImages(Dataset):
    """Preloaded uint8 images (N, 3, S, S) with labels; normalised, augmented if `augment`."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, mean: Sequence[float], std: Sequence[float],
                 augment: Augment | None = None):
        self.images, self.labels, self.augment = images, labels, augment
        self.mean = torch.tensor(mean).view(3, 1, 1)
        self.std = torch.tensor(std).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.images[i].float() / 255.0
        if self.augment is not None:
            x = self.augment(x)
        return (x - self.mean) / self.std, self.labels[i]


class ThinSectionDataModule(L.LightningDataModule):
    """Train / test (and, with `fold`, cross-validation) loaders of the thin-section images.

    `root` is the layout above; `synthetic` (a `GeneratorConfig` as a dict) writes it first
    with the seeded generator under `cache_dir` and reads it back through the same code. The val
    loader is the test part (the thesis tracked test accuracy per epoch for its plots; nothing is
    selected on it); with `fold` set, the training part is split into `num_folds` and fold `fold`
    is held out as both val and test.
    """

    def __init__(self, root: str | None = None, synthetic: dict | None = None, cache_dir: str | None = None,
                 split: str = "image_random_80_20", test_fraction: float = 0.2, split_seed: int = 0,
                 fold: int | None = None, num_folds: int = 3, image_size: int = 224, batch_size: int = 32,
                 eval_batch_size: int | None = None, num_workers: int = 0, augment: bool = True,
                 crop_scale: Sequence[float] = (0.5, 1.0), jitter: float = 0.2,
                 polarisations: Sequence[str] = ("PPL", "XPL"), magnifications: Sequence[str] = ("2.5X", "10X"),
                 include_rotated: bool = False, mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD):
        super().__init__()
        if root is None and synthetic is None:
            raise ConfigError("data.root is not set: point it at the thin-section folder or configure data.synthetic")
        if split not in SPLITS:
            raise ConfigError(f"data.split={split!r}: use one of {', '.join(SPLITS)}")
        if fold is not None and not 0 <= fold < num_folds:
            raise ConfigError(f"data.fold={fold} is not in 0..{num_folds - 1}")
        self.root_arg, self.synthetic, self.cache_dir = root, synthetic, cache_dir
        self.split, self.test_fraction, self.split_seed = split, test_fraction, split_seed
        self.fold, self.num_folds = fold, num_folds
        self.image_size = image_size
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size or batch_size
        self.num_workers = num_workers
        self.augment = Augment(crop_scale, jitter) if augment else None
        self.polarisations, self.magnifications = tuple(polarisations), tuple(magnifications)
        self.include_rotated = include_rotated
        self.mean, self.std = tuple(mean), tuple(std)
        self.root: Path | None = None
        self.index: pd.DataFrame | None = None
        self.images: torch.Tensor | None = None
        self.parts: dict[str, np.ndarray] = {}
        self.splits: dict[str, Dataset] = {}

    @property
    def num_classes(self) -> int:
        self.setup()
        return int(self.index["label"].max()) + 1

    @property
    def class_ids(self) -> list[int]:
        self.setup()
        return sorted(int(c) for c in self.index["class_id"].unique())

    def resolve_root(self) -> Path:
        if self.root is None:
            if self.synthetic is not None:
                from thesis.ceramics.synthetic import config_from, materialize

                cache = self.cache_dir or (Path(self.root_arg) if self.root_arg else Path("outputs/.fixtures"))
                self.root = materialize(config_from(self.synthetic), cache)
            else:
                self.root = Path(self.root_arg)
        return self.root

    def setup(self, stage: str | None = None) -> None:
        if self.index is not None:
            return
        index = scan(self.resolve_root())
        keep = index["polarisation"].isin(self.polarisations) & index["magnification"].isin(self.magnifications)
        if not self.include_rotated:
            keep &= index["rotation_deg"] == 0
        index = index[keep].reset_index(drop=True)
        if index.empty:
            raise DataNotFoundError(f"no images left under {self.root} after keeping polarisations "
                                    f"{self.polarisations} and magnifications {self.magnifications}")
        pixels = np.stack([load_image(self.root / f, self.image_size) for f in index["file"]])
        self.images = torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous()
        self.index = index
        self._assign()

    def _assign(self) -> None:
        """Training and test parts (and datasets) of the loaded index for this split and fold."""
        index = self.index
        train, test = split_positions(index, self.split, self.test_fraction, self.split_seed)
        if self.fold is not None:
            folds = fold_positions(index, train, self.num_folds, self.split == "grouped_by_sample", self.split_seed)
            test = folds[self.fold]
            train = np.sort(np.concatenate([f for i, f in enumerate(folds) if i != self.fold]))
        index["part"] = "unused"
        index.loc[train, "part"] = "train"
        index.loc[test, "part"] = "test"
        self.parts = {"train": train, "test": test}
        labels = torch.tensor(index["label"].to_numpy(), dtype=torch.long)
        self.splits = {
            "train": ThinSectionImages(self.images[train], labels[train], self.mean, self.std, self.augment),
            "test": ThinSectionImages(self.images[test], labels[test], self.mean, self.std, None),
        }

    def variant(self, split: str | None = None, fold: int | None = None) -> "ThinSectionDataModule":
        """The same loaded images under another split and/or cross-validation fold (no reloading)."""
        self.setup()
        other = copy.copy(self)
        L.LightningDataModule.__init__(other)
        other.split = split or self.split
        other.fold = fold
        if other.split not in SPLITS:
            raise ConfigError(f"split={other.split!r}: use one of {', '.join(SPLITS)}")
        other.index = self.index.copy()
        other._assign()
        return other

    def normalised(self, positions: Sequence[int]) -> torch.Tensor:
        """Evaluation tensors (no augmentation) of rows of `self.index`."""
        self.setup()
        x = self.images[list(positions)].float() / 255.0
        return (x - torch.tensor(self.mean).view(1, 3, 1, 1)) / torch.tensor(self.std).view(1, 3, 1, 1)

    def mask(self, position: int) -> np.ndarray | None:
        """The per-pixel mask of one row of `self.index`, resized to the image size (nearest)."""
        mask = load_mask(self.root, self.index["file"].iat[position])
        if mask is None or mask.shape[0] == self.image_size:
            return mask
        idx = (np.arange(self.image_size) + 0.5) * mask.shape[0] / self.image_size
        idx = np.clip(idx.astype(int), 0, mask.shape[0] - 1)
        return mask[idx][:, idx]

    def train_dataloader(self) -> DataLoader:
        self.setup()
        return training_loader(self.splits["train"], self.batch_size, self.num_workers)

    def _eval_loader(self) -> DataLoader:
        self.setup()
        return DataLoader(self.splits["test"], batch_size=self.eval_batch_size, num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader()

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader()

    def test_rows(self) -> pd.DataFrame:
        """The index rows of the test part, in test-loader order."""
        self.setup()
        return self.index.iloc[self.parts["test"]].reset_index()

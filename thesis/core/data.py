"""Datamodules shared by chapters: tensors in memory, sklearn's bundled digits, ImageFolder trees.

The digits set ships inside scikit-learn, so miniatures train on real images with no download.
Splits use their own seed (`split_seed`), fixed across run seeds, so seeds vary the training and
not the test set.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from thesis.core.errors import DataNotFoundError


class TensorDataModule(L.LightningDataModule):
    """Train/val/test splits held as tensors; subclasses fill `self.splits` in `setup`."""

    def __init__(self, batch_size: int = 64, num_workers: int = 0, eval_batch_size: int | None = None):
        super().__init__()
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.splits: dict[str, Dataset] = {}

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        if split not in self.splits:
            self.setup()
        size = self.batch_size if shuffle else self.eval_batch_size
        return DataLoader(self.splits[split], batch_size=size, shuffle=shuffle, num_workers=self.num_workers)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)


def stratified_split(labels: np.ndarray, fractions: tuple[float, ...], seed: int) -> list[np.ndarray]:
    """Index arrays, one per fraction (summing to 1), with each class split in the same ratios."""
    if not np.isclose(sum(fractions), 1.0):
        raise ValueError(f"split fractions must sum to 1, got {fractions}")
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[] for _ in fractions]
    for label in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == label))
        bounds = np.round(np.cumsum(fractions) * len(idx)).astype(int)
        for part, chunk in zip(parts, np.split(idx, bounds[:-1])):
            part.extend(chunk.tolist())
    return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]


class DigitsDataModule(TensorDataModule):
    """scikit-learn's 1797 8x8 handwritten digits, pixel values scaled to [0, 1].

    `flatten=True` gives 64-dim vectors (MLPs); otherwise (1, 8, 8) images.
    `limit` keeps the first n samples of each split (smoke runs).
    """

    def __init__(
        self,
        batch_size: int = 64,
        num_workers: int = 0,
        fractions: tuple[float, float, float] = (0.6, 0.1, 0.3),
        split_seed: int = 0,
        flatten: bool = True,
        limit: int | None = None,
        eval_batch_size: int | None = None,
    ):
        super().__init__(batch_size, num_workers, eval_batch_size)
        self.fractions = tuple(fractions)
        self.split_seed = split_seed
        self.flatten = flatten
        self.limit = limit
        self.num_classes = 10
        self.input_dim = 64

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        from sklearn.datasets import load_digits

        digits = load_digits()
        images = torch.tensor(digits.images / 16.0, dtype=torch.float32)
        images = images.reshape(len(images), -1) if self.flatten else images.unsqueeze(1)
        labels = torch.tensor(digits.target, dtype=torch.long)
        for name, idx in zip(("train", "val", "test"), stratified_split(digits.target, self.fractions, self.split_seed)):
            idx = torch.from_numpy(idx[: self.limit] if self.limit else idx)
            self.splits[name] = TensorDataset(images[idx], labels[idx])


class ImageFolderDataModule(L.LightningDataModule):
    """An ImageFolder tree (`<root>/<split>/<class>/<image>`) at `image_size` pixels.

    Evaluation: with `resize` the shorter side goes to `resize` and the centre `image_size`
    crop is kept (torchvision's ImageNet protocol: 256 -> 224); otherwise images are resized to
    `image_size` squares. Training adds random-resized crops and flips when `augment` is true.
    Paper scale points `root` at the prepared dataset (ImageNet, Food-101, ...); smoke scale at
    the `imagefolder_tiny` fixture, read by the same code.
    """

    def __init__(
        self,
        root: str,
        image_size: int = 224,
        batch_size: int = 64,
        num_workers: int = 0,
        train_split: str = "train",
        val_split: str = "val",
        test_split: str | None = None,
        mean: tuple[float, float, float] = (0.485, 0.456, 0.406),
        std: tuple[float, float, float] = (0.229, 0.224, 0.225),
        prepare_hint: str = "see scripts/ for the command that prepares it",
        resize: int | None = None,
        augment: bool = False,
    ):
        super().__init__()
        self.root = Path(root)
        self.image_size = image_size
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.split_names = {"train": train_split, "val": val_split, "test": test_split or val_split}
        self.mean, self.std = tuple(mean), tuple(std)
        self.prepare_hint = prepare_hint
        self.resize = resize
        self.augment = augment
        self.splits: dict[str, Dataset] = {}

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        from torchvision import datasets, transforms

        size = self.image_size
        normalise = [transforms.ToTensor(), transforms.Normalize(self.mean, self.std)]
        evaluation = [transforms.Resize(self.resize), transforms.CenterCrop(size)] if self.resize else \
            [transforms.Resize((size, size))]
        training = [transforms.RandomResizedCrop(size), transforms.RandomHorizontalFlip()] if self.augment else evaluation
        for split, folder in self.split_names.items():
            tf = transforms.Compose((training if split == "train" else evaluation) + normalise)
            path = self.root / folder
            if not path.is_dir():
                raise DataNotFoundError(f"dataset directory {path} not found: {self.prepare_hint}, "
                                        "or set paths.data_dir")
            self.splits[split] = datasets.ImageFolder(str(path), transform=tf)
        self.num_classes = len(self.splits["train"].classes)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        self.setup()
        return DataLoader(self.splits[split], batch_size=self.batch_size, shuffle=shuffle,
                          num_workers=self.num_workers)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", False)

"""Datamodules shared by chapters: tensors in memory, sklearn's bundled digits, ImageFolder trees.

The digits set ships inside scikit-learn, so miniatures train on real images with no download.
Splits use their own seed (`split_seed`), fixed across run seeds, so seeds vary the training and
not the test set. Training loaders are `ResumableDataLoader`s: a run killed mid-epoch and resumed
from its checkpoint sees the rest of the same epoch, in the same order.
"""

from __future__ import annotations

import contextlib
import random
from pathlib import Path
from typing import Any, Iterator

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler, TensorDataset

from thesis.core.errors import DataNotFoundError


@contextlib.contextmanager
def kept_random_state() -> Iterator[None]:
    """Run a block without moving Python's, NumPy's or torch's global CPU generator."""
    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])


class ReplayableRandomSampler(RandomSampler):
    """torch's RandomSampler, drawing the same seed from the global generator at the start of
    each pass (so the same orders), that remembers that seed so a checkpoint can replay the pass."""

    def __init__(self, data_source: Dataset):
        super().__init__(data_source)
        self.epoch = 0
        self.pass_seed: int | None = None
        self._replay_seed: int | None = None

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning before each epoch; only recorded, to tell a new pass from a replay."""
        self.epoch = epoch

    def replay(self, seed: int) -> None:
        """Make the next pass use `seed` instead of drawing one."""
        self._replay_seed = seed

    def __iter__(self) -> Iterator[int]:
        if self._replay_seed is None:
            seed = int(torch.empty((), dtype=torch.int64).random_().item())
        else:
            seed, self._replay_seed = self._replay_seed, None
        self.pass_seed = seed
        yield from torch.randperm(len(self.data_source), generator=torch.Generator().manual_seed(seed)).tolist()


class ResumableDataLoader(DataLoader):
    """A DataLoader whose place in the epoch goes into Lightning's checkpoints.

    Lightning stores `state_dict()` (epoch, batches served, the pass's shuffle seed) in every
    checkpoint and calls `load_state_dict` when resuming; the next pass over the same epoch then
    uses the same order (the recorded seed, or DistributedSampler's seed + epoch under DDP) and
    skips the batches already trained on. Skipping fetches and discards them with the global
    generators' states kept, so they stay where the checkpoint left them.

    Iteration is lazy: the underlying iterator (and its draws from the global generator) starts at
    the first batch, after Lightning has set the sampler's epoch.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._served = 0
        self._resume: dict[str, Any] | None = None

    def _epoch(self) -> int:
        return int(getattr(self.sampler, "epoch", 0))

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self._epoch(), "served": self._served, "seed": getattr(self.sampler, "pass_seed", None)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._resume = dict(state_dict)

    def __iter__(self) -> Iterator[Any]:
        return self._batches()

    def _batches(self) -> Iterator[Any]:
        resume, self._resume = self._resume, None
        replaying = resume is not None and resume["epoch"] == self._epoch() and resume["served"] > 0
        self._served = 0
        with kept_random_state() if replaying else contextlib.nullcontext():
            if replaying and resume["seed"] is not None and isinstance(self.sampler, ReplayableRandomSampler):
                self.sampler.replay(resume["seed"])
            batches = super().__iter__()
            for _ in zip(range(resume["served"] if replaying else 0), batches):
                self._served += 1
        for batch in batches:
            self._served += 1
            yield batch


def training_loader(dataset: Dataset, batch_size: int, num_workers: int, **loader_options: Any) -> ResumableDataLoader:
    """The shuffled, resumable loader every training split goes through; `loader_options` are
    further DataLoader arguments (collate_fn, persistent_workers, ...)."""
    return ResumableDataLoader(dataset, batch_size=batch_size, sampler=ReplayableRandomSampler(dataset),
                               num_workers=num_workers, **loader_options)


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
        if shuffle:
            return training_loader(self.splits[split], self.batch_size, self.num_workers)
        return DataLoader(self.splits[split], batch_size=self.eval_batch_size, num_workers=self.num_workers)

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
        if shuffle:
            return training_loader(self.splits[split], self.batch_size, self.num_workers)
        return DataLoader(self.splits[split], batch_size=self.batch_size, num_workers=self.num_workers)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", False)

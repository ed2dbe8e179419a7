"""The fine-tuning datasets of Sec. 3.2 (CIFAR-100, Food-101, Flowers-102), read from a local `root`.

`reader="torchvision"` uses torchvision's own dataset classes on the files as their authors
distribute them (never downloading: `download=False`); `reader="imagefolder"` reads
`<root>/<split>/<class>/<image>` trees (any dataset laid out that way, and the smoke fixtures).
Images are resized to `image_size` squares (224 for the pre-trained models) and normalised.

Training augmentation follows Sec. 3.2.8: "two random augmentations picked between horizontal or
vertical flipping and random cropping" - every image gets two of the three, drawn at random. The
crop is a random-resized crop keeping 50-100 % of the area (the thesis names no crop size).
"""

from __future__ import annotations

import random
from pathlib import Path

import lightning as L
from torch.utils.data import DataLoader, Dataset

from thesis.core.data import training_loader
from thesis.core.errors import ConfigError, DataNotFoundError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: torchvision class, train / evaluation split arguments and number of classes per dataset
TORCHVISION = {
    "cifar100": ("CIFAR100", {"train": True}, {"train": False}, 100),
    "food101": ("Food101", {"split": "train"}, {"split": "test"}, 101),
    "flowers102": ("Flowers102", {"split": "train"}, {"split": "test"}, 102),
}
READERS = ("torchvision", "imagefolder")


class TwoOfThree:
    """Apply `count` of the given transforms, drawn without replacement per image, in random order."""

    def __init__(self, transforms: list, count: int = 2):
        self.transforms, self.count = transforms, count

    def __call__(self, image):
        for transform in random.sample(self.transforms, self.count):
            image = transform(image)
        return image


class FineTuneImages(L.LightningDataModule):
    """Train / val / test loaders of one classification dataset at `image_size` pixels.

    The val loader is the test split (the thesis reports test accuracy and tunes nothing on a
    validation split); `limit_*` in the trainer bounds the evaluation cost.
    """

    def __init__(self, name: str, root: str, reader: str = "torchvision", image_size: int = 224,
                 batch_size: int = 128, eval_batch_size: int | None = None, num_workers: int = 0,
                 augment: bool = True, mean: tuple = IMAGENET_MEAN, std: tuple = IMAGENET_STD,
                 train_split: str = "train", test_split: str = "val", prepare_hint: str = ""):
        super().__init__()
        if reader not in READERS:
            raise ConfigError(f"data.reader must be one of {READERS}, got {reader!r}")
        if reader == "torchvision" and name not in TORCHVISION:
            raise ConfigError(f"no torchvision reader for {name!r}: use one of {sorted(TORCHVISION)} "
                              "or data.reader=imagefolder")
        self.name, self.root, self.reader = name, Path(root), reader
        self.image_size, self.augment = image_size, augment
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size or batch_size
        self.num_workers = num_workers
        self.mean, self.std = tuple(mean), tuple(std)
        self.split_names = {"train": train_split, "test": test_split}
        self.prepare_hint = prepare_hint
        self.splits: dict[str, Dataset] = {}
        self.num_classes: int | None = None

    def _transforms(self, train: bool):
        from torchvision import transforms as T

        size = self.image_size
        steps = [T.Resize((size, size))]
        if train and self.augment:
            steps.append(TwoOfThree([T.RandomHorizontalFlip(1.0), T.RandomVerticalFlip(1.0),
                                     T.RandomResizedCrop(size, scale=(0.5, 1.0))]))
        return T.Compose([*steps, T.ToTensor(), T.Normalize(self.mean, self.std)])

    def _missing(self, what: Path) -> DataNotFoundError:
        hint = f": {self.prepare_hint}" if self.prepare_hint else ""
        return DataNotFoundError(f"{self.name} not found at {what}{hint} (or set paths.data_dir)")

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        from torchvision import datasets

        for split in ("train", "test"):
            transform = self._transforms(split == "train")
            if self.reader == "imagefolder":
                folder = self.root / self.split_names[split]
                if not folder.is_dir():
                    raise self._missing(folder)
                self.splits[split] = datasets.ImageFolder(str(folder), transform=transform)
                continue
            cls_name, train_args, test_args, _ = TORCHVISION[self.name]
            try:
                self.splits[split] = getattr(datasets, cls_name)(
                    str(self.root), transform=transform, download=False, **(train_args if split == "train" else test_args))
            except RuntimeError as exc:  # torchvision: "Dataset not found or corrupted ..."
                raise self._missing(self.root) from exc
        self.num_classes = len(self.splits["train"].classes) if self.reader == "imagefolder" else TORCHVISION[self.name][3]

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        self.setup()
        options = {"persistent_workers": self.num_workers > 0}
        if shuffle:
            return training_loader(self.splits[split], self.batch_size, self.num_workers, **options)
        return DataLoader(self.splits[split], batch_size=self.eval_batch_size, num_workers=self.num_workers, **options)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("test", False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", False)

"""Colour cluttered digits for the ALaST miniature: pre-train on some classes, fine-tune on the others.

Stands in for "ImageNet pre-training, then fine-tuning on a new dataset" offline: scikit-learn's
digits, upscaled 2x to 16 px, pasted at a random place on a 32x32 noisy canvas with distractor
blobs (`thesis.core.canvas_digits.render_canvas`), tinted per colour channel. With 4 px patches,
64 patch tokens of which about a quarter cover the digit: most tokens are background, which is
what token dropping exploits. Source and target tasks use disjoint classes (default 0-4 / 5-9,
labels renumbered from 0); train and test glyphs are disjoint. Training placements are drawn
afresh every epoch (the trainer must reload the train loader each epoch), test ones are fixed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from thesis.core.canvas_digits import render_canvas
from thesis.core.data import TensorDataModule, stratified_split


class CanvasTransfer(TensorDataModule):
    """RGB 32x32 canvases of the digits in `classes`; `train_dataloader` re-renders each epoch."""

    def __init__(self, classes: Sequence[int] = (5, 6, 7, 8, 9), batch_size: int = 128, num_workers: int = 0,
                 canvas: int = 32, scale: int = 2, noise: float = 0.15, distractors: tuple[int, int] = (1, 3),
                 tint: tuple[float, float] = (0.6, 1.0), num_train: int = 1536, num_test: int = 1000,
                 split_seed: int = 0, eval_batch_size: int | None = None):
        super().__init__(batch_size, num_workers, eval_batch_size)
        self.classes = [int(c) for c in classes]
        self.render_kwargs = {"canvas": canvas, "scale": scale, "noise": noise, "distractors": tuple(distractors)}
        self.tint = tuple(tint)
        self.sizes = {"train": num_train, "val": num_test, "test": num_test}
        self.split_seed = split_seed
        self.num_classes = len(self.classes)
        self._pools: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def _render(self, split: str, rng: np.random.Generator) -> TensorDataset:
        glyphs, labels = self._pools[split]
        gray, which, _ = render_canvas(glyphs, self.sizes[split], rng, **self.render_kwargs)
        tint = rng.uniform(*self.tint, size=(len(gray), 3, 1, 1)).astype(np.float32)
        images = torch.from_numpy(gray[:, None] * tint)
        return TensorDataset(images, torch.from_numpy(labels[which]).long())

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        from sklearn.datasets import load_digits

        digits = load_digits()
        chosen = np.flatnonzero(np.isin(digits.target, self.classes))
        renumber = {c: i for i, c in enumerate(self.classes)}
        labels = np.array([renumber[t] for t in digits.target[chosen]])
        train_idx, test_idx = stratified_split(labels, (0.8, 0.2), self.split_seed)
        self._pools = {"train": (digits.images[chosen[train_idx]], labels[train_idx]),
                       "test": (digits.images[chosen[test_idx]], labels[test_idx])}
        self._pools["val"] = self._pools["test"]
        for offset, split in enumerate(("train", "val", "test")):
            self.splits[split] = self._render(split, np.random.default_rng([self.split_seed, offset]))

    def train_dataloader(self) -> DataLoader:
        self.setup()
        epoch = self.trainer.current_epoch if self.trainer is not None else 0
        if epoch > 0:
            self.splits["train"] = self._render("train", np.random.default_rng([self.split_seed, 0, epoch]))
        return super().train_dataloader()

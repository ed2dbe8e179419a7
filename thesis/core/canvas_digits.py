"""Cluttered digits: sklearn's bundled 8x8 digits pasted on a noisy canvas with distractor blobs.

Offline data on which "not every input part needs the same compute" is built in and measurable:
most of the canvas is background, and a per-patch foreground mask says where the digit is.
Train and test glyphs are disjoint (a stratified split of the 1797 base digits), so test
accuracy measures generalisation to unseen handwriting, not memorised glyphs.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import TensorDataset

from thesis.core.data import TensorDataModule, stratified_split


def render_canvas(
    glyphs: np.ndarray,
    n: int,
    rng: np.random.Generator,
    canvas: int = 16,
    scale: int = 1,
    noise: float = 0.1,
    distractors: tuple[int, int] = (1, 3),
    distractor_intensity: float = 0.3,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`n` canvases (n, canvas, canvas) in [0, 1], the index of the glyph pasted on each, and the
    glyph's pixel mask (n, canvas, canvas): where the pasted glyph is brighter than 0.2.

    Each canvas: Gaussian noise (std `noise`), 1-3 class-independent blobs (2x2 or 3x3, intensity
    up to `distractor_intensity`), then a glyph (values / 16, upsampled `scale` times) at a
    uniformly random offset, pasted with a max so blobs never hide it.
    """
    size = 8 * scale
    if size > canvas:
        raise ValueError(f"a {size}px glyph does not fit a {canvas}px canvas")
    which = rng.integers(0, len(glyphs), n)
    images = rng.normal(0.0, noise, (n, canvas, canvas))
    masks = np.zeros((n, canvas, canvas), dtype=bool)
    for i in range(n):
        for _ in range(rng.integers(distractors[0], distractors[1] + 1)):
            side = int(rng.integers(2, 4))
            r, c = rng.integers(0, canvas - side + 1, 2)
            images[i, r:r + side, c:c + side] += rng.uniform(0.1, distractor_intensity)
        glyph = np.kron(glyphs[which[i]] / 16.0, np.ones((scale, scale)))
        r, c = rng.integers(0, canvas - size + 1, 2)
        images[i, r:r + size, c:c + size] = np.maximum(images[i, r:r + size, c:c + size], glyph)
        masks[i, r:r + size, c:c + size] = glyph > 0.2
    return np.clip(images, 0.0, 1.0).astype(np.float32), which, masks


def foreground_patches(masks: np.ndarray, patch: int) -> np.ndarray:
    """Per-patch foreground flags (n, (canvas / patch)^2), row-major like a ViT's patch tokens."""
    n, h, w = masks.shape
    if h % patch or w % patch:
        raise ValueError(f"a {h}x{w} canvas does not split into {patch}px patches")
    return masks.reshape(n, h // patch, patch, w // patch, patch).any(axis=(2, 4)).reshape(n, -1)


class CanvasDigitsDataModule(TensorDataModule):
    """Cluttered digits with disjoint train/test glyphs; fixed, seeded samples per split.

    `flatten=True` gives vectors of canvas^2 values (MLPs); otherwise (1, canvas, canvas) images.
    `foreground[split]` holds each sample's per-patch foreground flags for `patch`-pixel patches
    (where compute should concentrate, thesis Figs. 3.2 / 3.7).
    """

    def __init__(
        self,
        batch_size: int = 64,
        num_workers: int = 0,
        canvas: int = 16,
        scale: int = 1,
        noise: float = 0.1,
        distractors: tuple[int, int] = (1, 3),
        num_train: int = 10000,
        num_val: int = 1000,
        num_test: int = 5000,
        split_seed: int = 0,
        flatten: bool = False,
        patch: int = 4,
        eval_batch_size: int | None = None,
    ):
        super().__init__(batch_size, num_workers, eval_batch_size)
        self.render_kwargs = {"canvas": canvas, "scale": scale, "noise": noise, "distractors": tuple(distractors)}
        self.sizes = {"train": num_train, "val": num_val, "test": num_test}
        self.split_seed = split_seed
        self.flatten = flatten
        self.patch = patch
        self.foreground: dict[str, torch.Tensor] = {}
        self.num_classes = 10
        self.input_dim = canvas * canvas

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        from sklearn.datasets import load_digits

        digits = load_digits()
        train_glyphs, test_glyphs = stratified_split(digits.target, (0.7, 0.3), self.split_seed)
        pools = {"train": train_glyphs, "val": train_glyphs, "test": test_glyphs}
        for offset, (split, size) in enumerate(self.sizes.items()):
            rng = np.random.default_rng([self.split_seed, offset])
            pool = pools[split]
            images, which, masks = render_canvas(digits.images[pool], size, rng, **self.render_kwargs)
            if self.render_kwargs["canvas"] % self.patch == 0:
                self.foreground[split] = torch.from_numpy(foreground_patches(masks, self.patch))
            x = torch.from_numpy(images)
            x = x.reshape(size, -1) if self.flatten else x.unsqueeze(1)
            self.splits[split] = TensorDataset(x, torch.from_numpy(digits.target[pool][which]).long())

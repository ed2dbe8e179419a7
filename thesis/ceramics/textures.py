"""The miniature's stand-in for ImageNet pre-training (spec C.5, `init=synthetic_pretrain`).

A disjoint procedural-texture task: 20 classes = 10 shape families (disk, ring, square, triangle,
rhomb, star, bar, arc, cross, dot cluster) x 2 scales (few large, many small), drawn in random
colours on random, noisy backgrounds. None of its classes is a fabric and no thin-section image
is used: the backbone learns generic colour, edge and shape features, then is frozen and only the
head is retrained on the thin sections, as the thesis did with ImageNet weights.
"""

from __future__ import annotations

import math

import numpy as np
import torch

SHAPES = ("disk", "ring", "square", "triangle", "rhomb", "star", "bar", "arc", "cross", "dots")
NUM_CLASSES = 2 * len(SHAPES)


def _shape_mask(shape: str, u: np.ndarray, v: np.ndarray, r: float, rng: np.random.Generator) -> np.ndarray:
    """Inside-mask of one object centred at the origin of (u, v), size r, random orientation."""
    a = rng.uniform(0, np.pi)
    c, s = math.cos(a), math.sin(a)
    x, y = c * u + s * v, -s * u + c * v
    d = np.hypot(x, y)
    if shape == "disk":
        return d <= r
    if shape == "ring":
        return (d <= r) & (d >= 0.6 * r)
    if shape == "square":
        return (np.abs(x) <= 0.8 * r) & (np.abs(y) <= 0.8 * r)
    if shape == "triangle":
        return (y >= -0.5 * r) & (np.sqrt(3) * x + y <= r) & (-np.sqrt(3) * x + y <= r)
    if shape == "rhomb":
        return np.abs(x) / r + np.abs(y) / (0.55 * r) <= 1
    if shape == "star":
        phi = np.arctan2(y, x)
        return d <= r * (0.55 + 0.45 * np.cos(5 * phi) ** 2)
    if shape == "bar":
        return (np.abs(x) <= r) & (np.abs(y) <= 0.18 * r)
    if shape == "arc":
        phi = np.arctan2(x, y)
        return (np.abs(d - 0.8 * r) <= 0.15 * r) & (np.abs(phi) <= 1.2)
    if shape == "cross":
        return ((np.abs(x) <= r) & (np.abs(y) <= 0.2 * r)) | ((np.abs(y) <= r) & (np.abs(x) <= 0.2 * r))
    if shape == "dots":
        out = np.zeros(u.shape, bool)
        for _ in range(4):
            cx, cy = rng.uniform(-0.7, 0.7, 2) * r
            out |= np.hypot(x - cx, y - cy) <= 0.25 * r
        return out
    raise ValueError(shape)


def render_texture(label: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """One (size, size, 3) float image of class `label` in [0, 1]."""
    shape, small = SHAPES[label % len(SHAPES)], label >= len(SHAPES)
    coords = (np.arange(size) + 0.5) / size
    uu, vv = np.meshgrid(coords, coords)
    background = rng.uniform(0.05, 0.9, 3)
    image = background + 0.08 * rng.standard_normal((size, size, 3)) * rng.uniform(0.2, 1.0)
    gx, gy = rng.uniform(-1, 1, 2)
    image += 0.15 * np.sin(2 * np.pi * (gx * uu + gy * vv) + rng.uniform(0, 6))[..., None] * rng.uniform(0, 1, 3)
    count = rng.integers(10, 22) if small else rng.integers(2, 5)
    radius = (0.035, 0.06) if small else (0.1, 0.2)
    for _ in range(count):
        cx, cy = rng.uniform(0, 1, 2)
        r = rng.uniform(*radius)
        mask = _shape_mask(shape, uu - cx, vv - cy, r, rng)
        colour = rng.uniform(0, 1, 3)
        image[mask] = colour + 0.05 * rng.standard_normal((int(mask.sum()), 3))
    return np.clip(image, 0, 1).astype(np.float32)


class TextureDataset(torch.utils.data.Dataset):
    """`count` seeded texture images (normalised tensors) with labels, generated in memory."""

    def __init__(self, count: int, size: int, seed: int, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)):
        rng = np.random.default_rng([seed, 11])
        labels = rng.integers(0, NUM_CLASSES, count)
        pixels = np.stack([render_texture(int(l), size, rng) for l in labels])
        x = torch.from_numpy(pixels).permute(0, 3, 1, 2)
        self.images = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
        self.labels = torch.from_numpy(labels).long()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        x = self.images[i]
        if torch.rand(()) < 0.5:
            x = x.flip(-1)
        return x, self.labels[i]

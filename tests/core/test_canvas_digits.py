"""Cluttered digits: seeded, correctly shaped, glyphs of train and test disjoint."""

import numpy as np
import torch

from thesis.core.canvas_digits import CanvasDigitsDataModule, foreground_patches, render_canvas
from thesis.core.data import stratified_split


def small(**kw):
    dm = CanvasDigitsDataModule(num_train=64, num_val=16, num_test=32, **kw)
    dm.setup()
    return dm


def test_shapes_and_range():
    dm = small(canvas=12)
    x, y = dm.splits["train"].tensors
    assert x.shape == (64, 1, 12, 12) and y.shape == (64,)
    assert float(x.min()) >= 0 and float(x.max()) <= 1
    assert small(canvas=10, flatten=True).splits["test"].tensors[0].shape == (32, 100)


def test_same_seed_same_data_other_seed_differs():
    a, b, c = small(), small(), small(split_seed=1)
    assert torch.equal(a.splits["test"].tensors[0], b.splits["test"].tensors[0])
    assert not torch.equal(a.splits["test"].tensors[0], c.splits["test"].tensors[0])


def test_glyph_split_is_disjoint_and_stratified():
    from sklearn.datasets import load_digits

    labels = load_digits().target
    train, test = stratified_split(labels, (0.7, 0.3), 0)
    assert not set(train) & set(test) and len(train) + len(test) == len(labels)
    assert set(labels[test]) == set(range(10))


def test_glyph_is_pasted_over_clutter():
    glyph = np.full((1, 8, 8), 16.0)
    images, which, masks = render_canvas(glyph, 5, np.random.default_rng(0), canvas=10, noise=0.0)
    assert (which == 0).all()
    assert all((img == 1.0).sum() == 64 for img in images)  # the full-intensity glyph is intact
    assert np.array_equal(masks, images == 1.0)


def test_foreground_patches_mark_the_glyph():
    masks = np.zeros((1, 8, 8), dtype=bool)
    masks[0, 5, 1] = True  # row 5, column 1 -> patch (1, 0) of a 2x2 grid of 4px patches
    assert foreground_patches(masks, 4).tolist() == [[False, False, True, False]]
    dm = small(canvas=16, patch=4)
    assert dm.foreground["test"].shape == (32, 16) and dm.foreground["test"].any(1).all()

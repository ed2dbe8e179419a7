"""The thin-section reader, the two splits and the cross-validation folds, the datamodule."""

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from thesis.ceramics.data import (Augment, ThinSectionDataModule, fold_positions, scan, split_positions)
from thesis.core.errors import ConfigError, DataNotFoundError


def index_like_the_thesis(seed: int = 0) -> pd.DataFrame:
    """178 samples x 8 images, classes of uneven size (as the thesis's fabrics)."""
    rng = np.random.default_rng(seed)
    classes = np.repeat(np.arange(1, 11), 8)
    classes = np.concatenate([classes, rng.integers(1, 11, 98)])
    rows = []
    for i, cls in enumerate(classes):
        for pol in ("PPL", "XPL"):
            for mag in ("2.5X", "10X"):
                for k in range(2):
                    rows.append({"file": f"{cls}/S{i:03d}__{pol}__{mag}__{k}.png", "class_id": int(cls),
                                 "sample_id": f"S{i:03d}", "polarisation": pol, "magnification": mag, "k": k})
    return pd.DataFrame(rows)


def samples_of(index: pd.DataFrame, positions) -> set:
    return set(index["sample_id"].iloc[positions])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_grouped_split_keeps_every_sample_on_one_side(seed):
    index = index_like_the_thesis(seed)
    train, test = split_positions(index, "grouped_by_sample", 0.2, seed)
    assert len(np.intersect1d(train, test)) == 0 and len(train) + len(test) == len(index)
    assert not samples_of(index, train) & samples_of(index, test)
    assert set(index.class_id.iloc[test]) == set(range(1, 11))          # every class is tested
    assert 0.15 < len(test) / len(index) < 0.25


def test_image_split_is_stratified_and_leaks_samples_as_the_thesis_did():
    index = index_like_the_thesis()
    train, test = split_positions(index, "image_random_80_20", 0.2, 0)
    for cls, part in index.groupby("class_id"):
        share = np.isin(part.index, test).mean()
        assert abs(share - 0.2) < 0.07, cls
    assert samples_of(index, train) & samples_of(index, test)           # the leak the grouped split removes


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_grouped_folds_never_share_a_sample(seed):
    """For every fold: no sample both in the fold and in the rest of the training part, nor in the test part."""
    index = index_like_the_thesis(seed)
    train, test = split_positions(index, "grouped_by_sample", 0.2, seed)
    folds = fold_positions(index, train, 3, grouped=True, seed=seed)
    assert np.array_equal(np.sort(np.concatenate(folds)), train)         # a partition of the training part
    for i, fold in enumerate(folds):
        rest = np.concatenate([f for j, f in enumerate(folds) if j != i])
        assert not samples_of(index, fold) & samples_of(index, rest)
        assert not samples_of(index, fold) & samples_of(index, test)
        assert set(index.class_id.iloc[fold]) == set(range(1, 11))


def test_image_folds_partition_the_training_images():
    index = index_like_the_thesis()
    train, _ = split_positions(index, "image_random_80_20", 0.2, 0)
    folds = fold_positions(index, train, 3, grouped=False, seed=0)
    assert np.array_equal(np.sort(np.concatenate(folds)), train)
    assert max(len(f) for f in folds) - min(len(f) for f in folds) <= 10


def test_splits_are_fixed_by_their_seed():
    index = index_like_the_thesis()
    a = split_positions(index, "grouped_by_sample", 0.2, 5)
    b = split_positions(index, "grouped_by_sample", 0.2, 5)
    c = split_positions(index, "grouped_by_sample", 0.2, 6)
    assert np.array_equal(a[1], b[1]) and not np.array_equal(a[1], c[1])
    with pytest.raises(ConfigError, match="grouped_by_sample"):
        split_positions(index, "by_site", 0.2, 0)


def test_datamodule_on_the_fixture(thinsections):
    data = ThinSectionDataModule(root=str(thinsections), split="grouped_by_sample", image_size=32, batch_size=8)
    data.setup()
    assert len(data.index) == 160 and (data.index.rotation_deg == 0).all()   # rotation series left out
    assert data.num_classes == 10 and data.class_ids == list(range(1, 11))
    x, y = next(iter(data.train_dataloader()))
    assert x.shape == (8, 3, 32, 32) and y.dtype == torch.long
    train, test = data.parts["train"], data.parts["test"]
    assert not samples_of(data.index, train) & samples_of(data.index, test)
    assert data.mask(int(test[0])).shape == (32, 32, 3)
    folded = data.variant(fold=1)
    assert folded.images is data.images                                  # no reloading
    assert set(folded.parts["test"]) < set(train) and not samples_of(data.index, folded.parts["test"]) & \
        samples_of(data.index, folded.parts["train"])
    by_image = data.variant(split="image_random_80_20")
    assert len(by_image.parts["test"]) == 30


def test_only_some_views_and_rotated_images(thinsections):
    data = ThinSectionDataModule(root=str(thinsections), image_size=16, polarisations=["XPL"], magnifications=["10X"],
                                 include_rotated=True)
    data.setup()
    assert set(data.index.polarisation) == {"XPL"} and set(data.index.magnification) == {"10X"}
    assert (data.index.rotation_deg > 0).sum() == 4


def test_reader_errors_name_the_problem(tmp_path):
    with pytest.raises(DataNotFoundError, match="not found"):
        scan(tmp_path / "missing")
    (tmp_path / "3").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "3" / "bad_name.png")
    with pytest.raises(DataNotFoundError, match="does not follow"):
        scan(tmp_path)
    (tmp_path / "3" / "bad_name.png").unlink()
    Image.new("RGB", (8, 8)).save(tmp_path / "3" / "B1-14__PPL__10X__0.png")
    pd.DataFrame([{"sample_id": "B1-14", "class_id": 4, "site": "Bethlehem"}]).to_csv(tmp_path / "metadata.csv")
    with pytest.raises(DataNotFoundError, match="class folder 3"):
        scan(tmp_path)
    pd.DataFrame([{"sample_id": "B1-14", "class_id": 3, "site": "Bethlehem"}]).to_csv(tmp_path / "metadata.csv")
    index = scan(tmp_path)
    assert index.loc[0, "site"] == "Bethlehem" and index.loc[0, "rotation_deg"] == 0.0


def test_real_images_are_centre_cropped_to_squares(tmp_path):
    (tmp_path / "1").mkdir()
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, 10:30] = 200                                               # the centre square is bright
    Image.fromarray(pixels).save(tmp_path / "1" / "K1__XPL__2.5X__0.png")
    data = ThinSectionDataModule(root=str(tmp_path), image_size=10, test_fraction=0.0)
    data.setup()
    assert data.images.shape == (1, 3, 10, 10) and data.images.float().mean() > 190


def test_augment_keeps_shape_and_range():
    torch.manual_seed(0)
    x = torch.rand(3, 24, 24)
    out = Augment((0.5, 1.0), 0.2)(x)
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1

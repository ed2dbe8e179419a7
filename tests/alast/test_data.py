"""Dataset readers of the chapter: ImageFolder and torchvision layouts, the thesis's augmentation,
and the colour cluttered digits of the miniature."""

import pytest
import torch

from thesis.alast.canvas import CanvasTransfer
from thesis.alast.data import FineTuneImages, TwoOfThree
from thesis.core.errors import ConfigError, DataNotFoundError
from thesis.core.fixtures import materialize


def test_imagefolder_reader_gives_normalised_batches_and_classes(tmp_path):
    root = materialize("imagefolder_tiny", tmp_path)
    data = FineTuneImages("tiny", str(root), reader="imagefolder", image_size=32, batch_size=4)
    images, labels = next(iter(data.train_dataloader()))
    assert images.shape == (4, 3, 32, 32) and data.num_classes == 3
    assert len(data.test_dataloader().dataset) == 12


def test_missing_torchvision_dataset_names_the_fix(tmp_path):
    data = FineTuneImages("cifar100", str(tmp_path / "nowhere"), prepare_hint="place it there")
    with pytest.raises(DataNotFoundError, match="cifar100 not found at .*nowhere: place it there"):
        data.setup()
    with pytest.raises(ConfigError, match="data.reader=imagefolder"):
        FineTuneImages("imagenet", str(tmp_path))


def test_two_of_three_applies_exactly_two():
    calls = []
    transforms = [lambda x, i=i: calls.append(i) or x for i in range(3)]
    for _ in range(10):
        calls.clear()
        TwoOfThree(transforms)(0)
        assert len(calls) == 2 and len(set(calls)) == 2


def test_canvas_transfer_renumbers_classes_and_redraws_training_placements():
    data = CanvasTransfer(classes=(5, 6, 7), num_train=32, num_test=16, batch_size=8)
    data.setup()
    images, labels = data.splits["train"].tensors
    assert images.shape == (32, 3, 32, 32) and set(labels.tolist()) <= {0, 1, 2}
    assert 0.0 <= images.min() and images.max() <= 1.0

    class Epoch:
        current_epoch = 3

    data.trainer = Epoch()
    data.train_dataloader()
    assert not torch.equal(data.splits["train"].tensors[0], images)

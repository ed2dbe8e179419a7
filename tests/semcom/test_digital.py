"""Digital baselines: what fits in b_max = q log2(1 + SNR), misclassified when nothing fits."""

import numpy as np
import torch

from thesis.semcom.digital import from_uint8, jpeg_accuracy, needed_sides, resize_accuracy, resize_roundtrip, to_uint8


def test_resize_misclassified_below_one_pixel_and_largest_side_otherwise():
    correct = {L: np.full(4, L == 10) for L in range(1, 33)}   # only side L = 10 is right
    p = 3 * 32 * 32
    # 24 L^2 <= q log2(1 + SNR): at SNR = 0 dB log2(2) = 1 bit per symbol
    assert resize_accuracy(correct, 32, 20 / p, 0.0, p) == 0.0                   # 20 bits: not one pixel
    assert resize_accuracy(correct, 32, 24 * 100 / p, 0.0, p) == 1.0            # exactly 10 x 10
    assert resize_accuracy(correct, 32, (24 * 121 - 1) / p, 0.0, p) == 1.0      # still 10, not 11
    assert resize_accuracy(correct, 32, 1.0, 30.0, p) == 0.0                     # 35 px fits: capped at 32
    assert needed_sides([20 / p, 24 * 100 / p, 1.0], [0.0, 30.0], p, 32) == [2, 10, 11, 31, 32]


def test_jpeg_picks_the_highest_quality_that_fits():
    bits = np.array([[900, 300], [500, 200], [100, 150]])     # qualities high -> low, 2 images
    correct = np.array([[True, False], [False, True], [True, True]])
    p = 1000
    assert jpeg_accuracy(correct, bits, 50 / p, 0.0, p) == 0.0    # 50 bits: nothing fits
    assert jpeg_accuracy(correct, bits, 120 / p, 0.0, p) == 0.5    # image 0 at q3 (right), image 1 none
    assert jpeg_accuracy(correct, bits, 600 / p, 0.0, p) == 0.0    # image 0 at q2 (wrong), image 1 at q1 (wrong)
    assert jpeg_accuracy(correct, bits, 1000 / p, 0.0, p) == 0.5   # q1 for both: right, wrong


def test_pixel_round_trips():
    images = torch.rand(2, 3, 8, 8)
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.2, 0.2)
    normalised = (images - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)
    pixels = to_uint8(normalised, mean, std)
    assert torch.allclose(from_uint8(pixels, mean, std), normalised, atol=0.03)
    assert np.array_equal(resize_roundtrip(pixels, 8), pixels)

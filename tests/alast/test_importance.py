"""Relative magnitude |F(x)| / |F(x) + x| (Fig. 3.12) and the per-layer analyses, on hand-built blocks."""

import pandas as pd
import pytest
import torch
from torch import nn

from thesis.alast.analysis import attention_entropy, grad_delta_correlation
from thesis.alast.importance import relative_magnitude


class Scale(nn.Module):
    """A residual block whose contribution is c times its input: F(x) = c x, output (1 + c) x."""

    def __init__(self, c):
        super().__init__()
        self.c = c

    def forward(self, x):
        return x + self.c * x


def test_relative_magnitude_of_hand_built_blocks(vit, images):
    vit.blocks = nn.Sequential(Scale(0.0), Scale(1.0), Scale(3.0))
    torch.testing.assert_close(relative_magnitude(vit, images), torch.tensor([0.0, 0.5, 0.75]))


def test_relative_magnitude_keeps_the_mode(vit, images):
    vit.train()
    relative_magnitude(vit, images)
    assert vit.training


def test_uniform_attention_has_maximal_entropy(vit, images):
    for block in vit.blocks:
        nn.init.zeros_(block.attn.qkv.weight)
        nn.init.zeros_(block.attn.qkv.bias)
    torch.testing.assert_close(attention_entropy(vit, images), torch.full((3,), torch.log(torch.tensor(17.0)).item()))


def test_grad_delta_correlation_is_per_layer_spearman():
    rows = pd.DataFrame({"layer": [0] * 4 + [1] * 4, "grad_norm": [1, 2, 3, 4, 1, 2, 3, 4],
                         "delta": [10, 20, 30, 40, 4, 3, 2, 1]})
    out = grad_delta_correlation(rows).set_index("layer").spearman
    assert out[0] == pytest.approx(1.0) and out[1] == pytest.approx(-1.0)

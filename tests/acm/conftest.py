"""Shared fixtures of the ACM tests."""

import copy

import pytest
import torch

from thesis.acm.convert import acmize_vit


@pytest.fixture
def vit_pair():
    """A tiny timm ViT (16x16 single-channel images, 4x4 patches, width 16, depth 2) in eval mode
    and its ACM-ized copy with 4 learners per module, both from seed 0."""
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    base = timm.create_model("vit_tiny_patch16_224", img_size=16, patch_size=4, in_chans=1, embed_dim=16,
                             depth=2, num_heads=2, num_classes=10).eval()
    converted = copy.deepcopy(base)
    acmize_vit(converted, num_learners=4)
    return base, converted

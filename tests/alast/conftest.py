"""Tiny timm ViTs shared by the ALaST tests."""

import pytest
import timm
import torch


def tiny_vit(depth: int = 3, embed_dim: int = 16, num_classes: int = 4, patch: int = 4, img: int = 16):
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=img, patch_size=patch,
                             embed_dim=embed_dim, depth=depth, num_heads=2, num_classes=num_classes)


@pytest.fixture
def vit():
    return tiny_vit()


@pytest.fixture
def make_vit():
    """The builder itself, for tests that need another depth or width."""
    return tiny_vit


@pytest.fixture
def images():
    return torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))

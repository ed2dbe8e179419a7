"""Tiny timm ViTs wrapped as the semcom model, seeded."""

import pytest
import timm
import torch

from thesis.semcom.channel import Link
from thesis.semcom.model import SemanticViT


def tiny_vit(depth: int = 4, dim: int = 32):
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=16, patch_size=4, embed_dim=dim,
                             depth=depth, num_heads=2, num_classes=5)


@pytest.fixture
def semantic():
    """Adaptive split ViT (s = 3) with a two-codec link; gate biases spread so tokens really drop."""
    model = SemanticViT(tiny_vit(), split=3, adaptive=True)
    model.attach_link(Link(model.dim, [0.25, 0.5]))
    with torch.no_grad():
        for selector in model.selectors:
            selector.gate.weight.normal_(0, 1.0)
            selector.gate.bias.fill_(0.0)
            selector.threshold.weight.zero_()
            selector.threshold.bias.fill_(-0.5)
    return model.eval()

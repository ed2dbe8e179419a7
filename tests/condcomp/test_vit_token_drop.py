"""Token dropping inside a timm ViT: keep-all is the model itself, fewer tokens cost fewer FLOPs."""

import pytest
import torch

from thesis.condcomp.vit_token_drop import TokenDroppingViT, class_similarity_keep
from thesis.core.flops import count_flops

timm = pytest.importorskip("timm")


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=32, depth=3,
                             num_heads=2, num_classes=5).eval()


def test_keep_all_is_the_model(vit):
    x = torch.rand(3, 3, 32, 32)
    assert torch.allclose(TokenDroppingViT(vit, drop_after=1, keep_ratio=1.0)(x), vit(x), atol=1e-6)


def test_keep_indices_hold_the_class_token_and_the_closest_patches():
    x = torch.zeros(1, 5, 2)
    x[0, 0] = torch.tensor([1.0, 0.0])  # class token
    x[0, 1:] = torch.tensor([[0.0, 1.0], [1.0, 0.1], [-1.0, 0.0], [1.0, 0.0]])
    assert class_similarity_keep(x, num_prefix=1, keep_ratio=0.5).tolist() == [[0, 2, 4]]


def test_flops_fall_with_the_keep_ratio(vit):
    x = torch.rand(1, 3, 32, 32)
    flops = [count_flops(TokenDroppingViT(vit, 0, r), x).total for r in (1.0, 0.75, 0.5, 0.25)]
    assert flops == sorted(flops, reverse=True) and len(set(flops)) == 4
    block = count_flops(vit.blocks[1], torch.rand(1, 17, 32)).total
    assert flops[0] - flops[2] == 2 * (block - count_flops(vit.blocks[1], torch.rand(1, 9, 32)).total)

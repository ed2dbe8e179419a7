"""torchvision's ViT-B/16 carried into timm computes the same function."""

import pytest
import torch

from thesis.acm.torchvision_vit import timm_vit_b16_from_torchvision, torchvision_to_timm_key


def test_key_mapping():
    assert torchvision_to_timm_key("encoder.layers.encoder_layer_11.mlp.3.bias") == "blocks.11.mlp.fc2.bias"
    assert torchvision_to_timm_key("encoder.layers.encoder_layer_0.self_attention.in_proj_weight") == "blocks.0.attn.qkv.weight"
    assert torchvision_to_timm_key("conv_proj.weight") == "patch_embed.proj.weight"
    with pytest.raises(KeyError, match="no timm counterpart"):
        torchvision_to_timm_key("encoder.something_else")


def test_same_outputs_as_torchvision():
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    reference = torchvision.models.vit_b_16(weights=None).eval()
    with torch.no_grad():  # non-trivial values everywhere (torchvision zero-inits the head)
        for p in reference.heads.parameters():
            p.normal_(0, 0.02)
    model = timm_vit_b16_from_torchvision(reference.state_dict()).eval()
    x = torch.rand(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(model(x), reference(x), atol=1e-4)

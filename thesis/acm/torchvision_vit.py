"""The thesis's base model: torchvision's ViT-B/16 (IMAGENET1K_V1, acc@1 81.072) as a timm ViT.

ACM-ization works on timm's VisionTransformer; this module carries torchvision's weights over
key by key (the two implementations compute the same function: pre-LN blocks, fused q/k/v in the
same order, exact GELU, LayerNorm eps 1e-6, class-token head), so the paper-scale experiments
start from exactly the checkpoint the thesis used.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from thesis.core.errors import CheckpointError

_BLOCK_KEYS = {
    "ln_1": "norm1",
    "self_attention.in_proj_weight": "attn.qkv.weight",
    "self_attention.in_proj_bias": "attn.qkv.bias",
    "self_attention.out_proj": "attn.proj",
    "ln_2": "norm2",
    "mlp.0": "mlp.fc1",
    "mlp.3": "mlp.fc2",
}
_TOP_KEYS = {
    "conv_proj": "patch_embed.proj",
    "class_token": "cls_token",
    "encoder.pos_embedding": "pos_embed",
    "encoder.ln": "norm",
    "heads.head": "head",
}


def torchvision_to_timm_key(key: str) -> str:
    """timm's name for a parameter of torchvision's VisionTransformer."""
    match = re.fullmatch(r"encoder\.layers\.encoder_layer_(\d+)\.(.+)", key)
    if match:
        index, rest = match.groups()
        for old, new in _BLOCK_KEYS.items():
            if rest == old or rest.startswith(old + "."):
                return f"blocks.{index}.{new}{rest[len(old):]}"
    for old, new in _TOP_KEYS.items():
        if key == old or key.startswith(old + "."):
            return new + key[len(old):]
    raise KeyError(f"no timm counterpart for torchvision parameter {key!r}")


def timm_vit_b16_from_torchvision(state_dict: dict[str, torch.Tensor], num_classes: int = 1000) -> nn.Module:
    """A timm `vit_base_patch16_224` holding the weights of a torchvision `vit_b_16` state dict."""
    import timm

    model = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=num_classes)
    converted = {torchvision_to_timm_key(k): v for k, v in state_dict.items()}
    missing, unexpected = model.load_state_dict(converted, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"torchvision ViT-B/16 weights do not map onto timm's ViT-B/16 (missing {missing[:3]}, "
                              f"unexpected {unexpected[:3]}): pass a torchvision vit_b_16 checkpoint")
    return model


def load_torchvision_vit_b16(weights: str = "IMAGENET1K_V1") -> nn.Module:
    """torchvision's pre-trained ViT-B/16 (downloaded into torch's cache) as a timm model."""
    from torchvision.models import ViT_B_16_Weights, vit_b_16

    try:
        tv_model = vit_b_16(weights=ViT_B_16_Weights[weights])
    except (OSError, RuntimeError) as exc:
        raise CheckpointError(f"torchvision ViT_B_16_Weights.{weights} is not in torch's cache and cannot be "
                              f"downloaded here ({type(exc).__name__}): fetch it on a machine with internet access "
                              "(torch.hub cache) or pass model.checkpoint") from None
    return timm_vit_b16_from_torchvision(tv_model.state_dict())

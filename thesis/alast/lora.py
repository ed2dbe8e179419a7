"""LoRA adapters inside a timm ViT, through peft, for the LoRA and LoRA + ALaST rows (Tables 3.2-3.6).

The thesis gives neither rank, scaling nor target layers; the defaults here (rank 8, alpha 16,
no dropout, the attention's fused qkv and output projections of every block) are this project's
choice. peft replaces the target `nn.Linear`s in place, so the model keeps timm's structure and
`SelectiveViT` runs it unchanged; the adapters' own products are counted like any other.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

ADAPTER_MARK = "lora_"


def add_lora(vit: nn.Module, rank: int = 8, alpha: float = 16, dropout: float = 0.0,
             targets: Sequence[str] = ("qkv", "proj")) -> nn.Module:
    """Inject LoRA adapters into `targets` (names inside each block's attention) of every block."""
    try:
        from peft import LoraConfig, inject_adapter_in_model
    except ImportError:
        raise ImportError("LoRA needs peft: pip install -e '.[peft]'") from None
    pattern = rf"blocks\.\d+\.attn\.({'|'.join(targets)})"  # a full-name regex: not patch_embed.proj
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=pattern)
    return inject_adapter_in_model(config, vit)


def is_adapter(name: str) -> bool:
    """Whether the parameter called `name` belongs to a LoRA adapter."""
    return ADAPTER_MARK in name

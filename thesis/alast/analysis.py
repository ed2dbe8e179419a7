"""Layer analyses of Sec. 3.2 on a pre-trained ViT (no training): Figs. 3.12, 3.16, 3.17.

- relative magnitude |F(x)| / |F(x) + x| per layer (Fig. 3.12, `thesis.alast.importance`);
- mean entropy of the attention rows per layer (Fig. 3.17: stable from layer 2 on in DeiT-T);
- the class token's attention over the patches at chosen layers for a few images (Fig. 3.16).
The correlation between per-layer gradient norms and class-token deltas (Fig. 3.14) needs
training steps: `record_grad_norms: true` on a fine-tuning run writes its table, and
`grad_delta_correlation` reduces it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from thesis.alast.importance import relative_magnitude
from thesis.alast.vit import attention_weights
from thesis.core.evaluate import progress
from thesis.core.rundir import RunDir


@torch.no_grad()
def attention_entropy(vit: nn.Module, images: Tensor) -> Tensor:
    """Per layer (L,): entropy (nats) of every attention row, averaged over rows, heads and samples."""
    x = vit.norm_pre(vit.patch_drop(vit._pos_embed(vit.patch_embed(images))))
    entropies = []
    for block in vit.blocks:
        weights, _ = attention_weights(block.attn, block.norm1(x))
        entropies.append(-(weights * weights.clamp_min(1e-12).log()).sum(-1).mean())
        x = block(x)
    return torch.stack(entropies).float().cpu()


@torch.no_grad()
def cls_attention_maps(vit: nn.Module, images: Tensor, layers: Sequence[int]) -> dict[int, Tensor]:
    """{layer: (B, patches)} class-token attention over the patch tokens (mean over heads)."""
    prefix = vit.num_prefix_tokens
    x = vit.norm_pre(vit.patch_drop(vit._pos_embed(vit.patch_embed(images))))
    maps = {}
    for l, block in enumerate(vit.blocks):
        if l in layers:
            weights, _ = attention_weights(block.attn, block.norm1(x))
            maps[l] = weights[:, :, 0, prefix:].mean(1).float().cpu()
        x = block(x)
    return maps


def grad_delta_correlation(rows: pd.DataFrame) -> pd.DataFrame:
    """Per layer, Spearman's rank correlation over steps between gradient norm and class-token delta."""
    out = []
    for layer, part in rows.dropna(subset=["grad_norm"]).groupby("layer"):
        rho = part.grad_norm.rank().corr(part.delta.rank()) if len(part) > 2 else np.nan
        out.append({"layer": int(layer), "spearman": float(rho), "steps": len(part)})
    return pd.DataFrame(out)


class LayerAnalysis:
    """Evaluator `(model, data, run, device)`: relative magnitude and attention entropy per layer on
    up to `max_batches` test batches, and class-token attention maps of `num_maps` images."""

    def __init__(self, max_batches: int | None = 8, map_layers: Sequence[int] = (1, 3, 5), num_maps: int = 4):
        self.max_batches, self.map_layers, self.num_maps = max_batches, list(map_layers), num_maps

    def __call__(self, model: nn.Module, data, run: RunDir, device: torch.device) -> dict[str, object]:
        data.setup()
        loader = data.test_dataloader()
        total = len(loader) if self.max_batches is None else min(self.max_batches, len(loader))
        magnitude, entropy, seen, first = 0, 0, 0, None
        for b, (images, _) in enumerate(progress(loader, "layer analysis", total)):
            if b == total:
                break
            images = images.to(device)
            first = images[: self.num_maps] if first is None else first
            magnitude = magnitude + relative_magnitude(model, images) * len(images)
            entropy = entropy + attention_entropy(model, images) * len(images)
            seen += len(images)
        magnitude, entropy = magnitude / seen, entropy / seen
        run.write_table("layers", [{"layer": l, "relative_magnitude": float(m), "attention_entropy": float(e)}
                                   for l, (m, e) in enumerate(zip(magnitude, entropy))])
        layers = [l for l in self.map_layers if l < len(model.blocks)]
        maps = cls_attention_maps(model, first, layers)
        run.write_table("cls_attention", [{"layer": l, "image": i, "patch": p, "attention": float(v)}
                                          for l, m in maps.items() for i, row in enumerate(m) for p, v in enumerate(row)])
        metrics: dict[str, object] = {"images": seen}
        metrics.update({f"relative_magnitude/{l}": float(m) for l, m in enumerate(magnitude)})
        metrics.update({f"attention_entropy/{l}": float(e) for l, e in enumerate(entropy)})
        return metrics

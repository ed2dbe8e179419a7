"""Input sparsity at inference (eq. 2.4 / 2.22, Fig. 2.1): drop tokens inside a pre-trained ViT.

After block `drop_after` of a timm VisionTransformer, keep the prefix (class) tokens and the
`keep_ratio` fraction of patch tokens most similar to the class token, then run the remaining
blocks on the shorter sequence. Training-free: it measures how accuracy, agreement with the full
model and FLOPs move with the number of kept tokens, the trade-off Chapter 2 describes for token
selection (savings appear at inference).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from thesis.condcomp.tokens import token_drop
from thesis.core.evaluate import progress
from thesis.core.flops import count_flops
from thesis.core.rundir import RunDir


def class_similarity_keep(x: Tensor, num_prefix: int, keep_ratio: float) -> Tensor:
    """Indices (B, num_prefix + k) of the prefix tokens and the k patches closest to the class token."""
    patches = x[:, num_prefix:]
    k = max(1, math.ceil(keep_ratio * patches.shape[1]))
    score = F.cosine_similarity(patches, x[:, :1], dim=-1)
    top = score.topk(k, dim=-1).indices.sort(dim=-1).values + num_prefix
    prefix = torch.arange(num_prefix, device=x.device).expand(x.shape[0], -1)
    return torch.cat([prefix, top], dim=1)


class TokenDroppingViT(nn.Module):
    """A timm VisionTransformer that drops tokens after one block (keep_ratio = 1 is the model itself)."""

    def __init__(self, vit: nn.Module, drop_after: int, keep_ratio: float):
        super().__init__()
        if not 0 <= drop_after < len(vit.blocks):
            raise ValueError(f"drop_after={drop_after} outside the model's {len(vit.blocks)} blocks")
        self.vit, self.drop_after, self.keep_ratio = vit, drop_after, keep_ratio

    def forward(self, images: Tensor) -> Tensor:
        vit = self.vit
        x = vit.norm_pre(vit.patch_drop(vit._pos_embed(vit.patch_embed(images))))
        for i, block in enumerate(vit.blocks):
            x = block(x)
            if i == self.drop_after and self.keep_ratio < 1:
                x = token_drop(x, class_similarity_keep(x, vit.num_prefix_tokens, self.keep_ratio))
        return vit.forward_head(vit.norm(x))


class TokenDropEvaluator:
    """Evaluator `(model, data, run, device) -> metrics` sweeping keep ratios on the val split."""

    def __init__(self, keep_ratios: Sequence[float], drop_after: int, max_batches: int | None = None):
        self.keep_ratios = list(keep_ratios)
        self.drop_after = drop_after
        self.max_batches = max_batches

    def __call__(self, model: nn.Module, data, run: RunDir, device: torch.device) -> dict[str, object]:
        data.setup()
        loader = data.val_dataloader()
        total = len(loader) if self.max_batches is None else min(self.max_batches, len(loader))
        variants = {r: TokenDroppingViT(model, self.drop_after, r) for r in self.keep_ratios}
        correct = {r: 0 for r in self.keep_ratios}
        agree = {r: 0 for r in self.keep_ratios}
        seen, example = 0, None
        for b, (images, labels) in enumerate(progress(loader, "token dropping", total)):
            if b == total:
                break
            images, labels = images.to(device), labels.to(device)
            example = images[:1] if example is None else example
            reference = model(images).argmax(-1)
            for ratio, variant in variants.items():
                pred = variant(images).argmax(-1)
                correct[ratio] += int((pred == labels).sum())
                agree[ratio] += int((pred == reference).sum())
            seen += len(labels)
        full = count_flops(model, example).total
        rows = []
        for ratio, variant in variants.items():
            flops = count_flops(variant, example).total
            rows.append({"keep_ratio": ratio, "accuracy": correct[ratio] / seen, "agreement": agree[ratio] / seen,
                         "flops": flops, "flops_fraction": flops / full})
        run.write_table("token_drop", rows)
        metrics: dict[str, object] = {"samples": seen, "flops/full": full}
        for row in rows:
            key = f"keep{row['keep_ratio']:g}"
            metrics.update({f"{key}/acc": row["accuracy"], f"{key}/agreement": row["agreement"],
                            f"{key}/flops_fraction": row["flops_fraction"]})
        return metrics

"""How much each transformer layer changes the residual stream (thesis Sec. 3.2.2, Fig. 3.12).

The relative magnitude of layer i is |F^i(x)| / |F^i(x) + x|, where F^i(x) is the block's output
minus its input (the non-residual contribution): near 0 the layer is close to the identity. The
thesis uses it to motivate ALaST; the FT top-k and BSR baselines use it here to pick their blocks
(the thesis found them "through exploratory analysis" without naming them).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


@torch.no_grad()
def relative_magnitude(vit: nn.Module, images: Tensor) -> Tensor:
    """Per block (L,): mean over samples and tokens of ||F(x)|| / ||F(x) + x||, full model, eval mode."""
    was_training = vit.training
    vit.eval()
    x = vit.norm_pre(vit.patch_drop(vit._pos_embed(vit.patch_embed(images))))
    ratios = []
    for block in vit.blocks:
        out = block(x)
        ratios.append(((out - x).norm(dim=-1) / out.norm(dim=-1).clamp_min(1e-12)).mean())
        x = out
    vit.train(was_training)
    return torch.stack(ratios).float().cpu()

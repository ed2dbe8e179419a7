"""Explanations of Section 5.5 and the numbers the miniature computes from them.

CNN: Grad-CAM (Selvaraju et al.) on the last convolutional stage: channel weights = spatial mean
of the class score's gradient, map = ReLU(sum_c w_c A_c), bilinearly upsampled to the input;
guided backpropagation: ReLUs pass back only positive gradients where their input was positive
(every `nn.ReLU` of the model is swapped for a guided one inside `guided_relus`); Guided Grad-CAM
= guided gradients x upsampled Grad-CAM, for the predicted class unless a class is given.

ViT: the softmax attention of every block (timm's fused kernel is switched off while capturing),
the class token's attention to the patches per layer and head, and attention rollout (Abnar &
Zuidema: heads averaged, identity added for the residual, rows renormalised, layers multiplied).

Localisation: energy-in-mask ratio = (map mass inside the mask / total mass) / (mask area share),
1 for a map that ignores the mask; pointing game = the map's maximum within `tolerance` pixels of
the mask. Rotation: maps at a stage rotation are turned back into the 0-degree frame (`derotate`)
and compared inside the inscribed disk, which every rotation keeps in view.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from thesis.ceramics.models import last_conv_stage
from thesis.core.errors import ConfigError


@dataclass
class CamResult:
    cam: Tensor        # (B, H, W) Grad-CAM upsampled to the input, each map scaled to max 1
    raw: Tensor        # (B, h, w) Grad-CAM at the layer's resolution, unscaled
    logits: Tensor     # (B, classes)
    target: Tensor     # (B,) the explained class


def _targets(logits: Tensor, target: Tensor | int | None) -> Tensor:
    if target is None:
        return logits.argmax(-1)
    if isinstance(target, int):
        return torch.full((logits.shape[0],), target, dtype=torch.long, device=logits.device)
    return target.to(logits.device).long()


def _scale(maps: Tensor) -> Tensor:
    peak = maps.flatten(1).amax(1).clamp_min(1e-12)
    return maps / peak.view(-1, *([1] * (maps.dim() - 1)))


def grad_cam(model: nn.Module, x: Tensor, target: Tensor | int | None = None, layer: nn.Module | None = None
             ) -> CamResult:
    """Grad-CAM of `model` (in eval mode) on a batch `x` (B, 3, H, W)."""
    layer = layer or last_conv_stage(model)
    store: dict[str, Tensor] = {}
    handle = layer.register_forward_hook(lambda m, i, o: store.__setitem__("a", o))
    try:
        with torch.enable_grad():
            x = x.detach().clone().requires_grad_(True)
            logits = model(x)
            target = _targets(logits, target)
            score = logits.gather(1, target[:, None]).sum()
            activation = store["a"]
            (grads,) = torch.autograd.grad(score, activation)
    finally:
        handle.remove()
    weights = grads.mean(dim=(2, 3), keepdim=True)
    raw = F.relu((weights * activation).sum(1)).detach()
    up = F.interpolate(raw[:, None], size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    return CamResult(_scale(up.clamp_min(0)), raw, logits.detach(), target)


class _GuidedReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        out = x.clamp(min=0)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (out,) = ctx.saved_tensors
        return grad * (out > 0).to(grad.dtype) * (grad > 0).to(grad.dtype)


def _guided_forward(x: Tensor) -> Tensor:
    return _GuidedReLU.apply(x)


@contextmanager
def guided_relus(model: nn.Module) -> Iterator[int]:
    """Swap the backward of every `nn.ReLU` of `model` for guided backpropagation's (restored after)."""
    patched = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    if not patched:
        raise ConfigError(f"{type(model).__name__} has no nn.ReLU modules: guided backpropagation needs them")
    for module in patched:
        module.forward = _guided_forward
    try:
        yield len(patched)
    finally:
        for module in patched:
            del module.forward


def guided_backprop(model: nn.Module, x: Tensor, target: Tensor | int | None = None) -> tuple[Tensor, Tensor]:
    """Guided-backpropagation gradients (B, 3, H, W) of the target class score, and the targets."""
    with guided_relus(model), torch.enable_grad():
        x = x.detach().clone().requires_grad_(True)
        logits = model(x)
        target = _targets(logits, target)
        (grads,) = torch.autograd.grad(logits.gather(1, target[:, None]).sum(), x)
    return grads.detach(), target


@dataclass
class GuidedGradCam:
    cam: Tensor        # (B, H, W) Grad-CAM in [0, 1]
    guided: Tensor     # (B, 3, H, W) guided-backprop gradients
    product: Tensor    # (B, 3, H, W) guided x Grad-CAM
    logits: Tensor
    target: Tensor

    @property
    def saliency(self) -> Tensor:
        """(B, H, W) pixel saliency of the product: absolute value summed over colour channels."""
        return self.product.abs().sum(1)


def guided_grad_cam(model: nn.Module, x: Tensor, target: Tensor | int | None = None,
                    layer: nn.Module | None = None) -> GuidedGradCam:
    cam = grad_cam(model, x, target, layer)
    guided, _ = guided_backprop(model, x, cam.target)
    return GuidedGradCam(cam.cam, guided, guided * cam.cam[:, None], cam.logits, cam.target)


# ------------------------------------------------------------------------------------- ViT

@contextmanager
def captured_attention(model: nn.Module) -> Iterator[list[Tensor]]:
    """Collect each block's softmax attention (B, heads, N, N) during forward passes."""
    if not hasattr(model, "blocks"):
        raise ConfigError(f"{type(model).__name__} has no transformer blocks to read attention from")
    store: list[Tensor] = []
    handles, fused = [], []
    for block in model.blocks:
        attn = block.attn
        if not hasattr(attn, "attn_drop"):
            raise ConfigError(f"{type(attn).__name__} is not timm's Attention: cannot capture its weights")
        fused.append(getattr(attn, "fused_attn", False))
        attn.fused_attn = False
        handles.append(attn.attn_drop.register_forward_hook(lambda m, i, o: store.append(o.detach())))
    try:
        yield store
    finally:
        for handle in handles:
            handle.remove()
        for block, flag in zip(model.blocks, fused):
            block.attn.fused_attn = flag


def vit_attention(model: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    """(layers, B, heads, N, N) attention of one forward pass and the logits."""
    with captured_attention(model) as store, torch.no_grad():
        logits = model(x)
    return torch.stack(store), logits


def grid_of(model: nn.Module) -> tuple[int, int]:
    return tuple(int(g) for g in model.patch_embed.grid_size)


def cls_attention(attention: Tensor, num_prefix: int, grid: tuple[int, int]) -> Tensor:
    """The class token's attention to the patches: (layers, B, heads, gh, gw), rows not renormalised."""
    layers, batch, heads = attention.shape[:3]
    return attention[..., 0, num_prefix:].reshape(layers, batch, heads, *grid)


def rollout(attention: Tensor, num_prefix: int, grid: tuple[int, int]) -> Tensor:
    """Attention rollout (B, gh, gw) of the class token over all layers, scaled to max 1."""
    mean = attention.mean(2)                                      # (L, B, N, N)
    eye = torch.eye(mean.shape[-1], device=mean.device)
    result = None
    for layer in mean:
        a = 0.5 * layer + 0.5 * eye
        a = a / a.sum(-1, keepdim=True)
        result = a if result is None else a @ result
    maps = result[:, 0, num_prefix:].reshape(-1, *grid)
    return _scale(maps)


def upsample(maps: Tensor, size: int) -> Tensor:
    """(..., h, w) maps to (..., size, size), bilinear."""
    shape = maps.shape
    flat = maps.reshape(-1, 1, *shape[-2:]).float()
    return F.interpolate(flat, size=(size, size), mode="bilinear", align_corners=False).reshape(*shape[:-2], size, size)


def normalised_entropy(p: Tensor) -> Tensor:
    """Entropy of distributions over the last axis (renormalised), divided by log(n): in [0, 1]."""
    p = p.clamp_min(0)
    p = p / p.sum(-1, keepdim=True).clamp_min(1e-12)
    return -(p * p.clamp_min(1e-12).log()).sum(-1) / math.log(p.shape[-1])


# ----------------------------------------------------------------------------- localisation

def energy_in_mask(saliency: np.ndarray, mask: np.ndarray) -> float:
    """(mass inside / total mass) / (mask area share); nan for an empty mask or map."""
    saliency = np.clip(np.asarray(saliency, dtype=np.float64), 0, None)
    mask = np.asarray(mask, dtype=bool)
    share, total = mask.mean(), saliency.sum()
    if share == 0 or total <= 0:
        return float("nan")
    return float(saliency[mask].sum() / total / share)


def dilate(mask: np.ndarray, pixels: int) -> np.ndarray:
    if pixels <= 0:
        return np.asarray(mask, dtype=bool)
    t = torch.from_numpy(np.asarray(mask, dtype=np.float32))[None, None]
    return F.max_pool2d(t, 2 * pixels + 1, stride=1, padding=pixels)[0, 0].numpy() > 0


def pointing_hit(saliency: np.ndarray, mask: np.ndarray, tolerance: int = 0) -> float:
    """1 if the map's maximum lies within `tolerance` pixels of the mask, 0 if not, nan if no mask."""
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return float("nan")
    y, x = np.unravel_index(int(np.argmax(saliency)), np.shape(saliency))
    return float(dilate(mask, tolerance)[y, x])


def derotate(maps: Tensor, angle_deg: float, mode: str = "bilinear") -> Tensor:
    """Maps (..., H, W) taken at stage rotation `angle_deg` back in the 0-degree frame.

    The renderer shows specimen point p at image position R(angle) (p - c) / w, so the 0-degree
    position x0 is seen at R(angle) x0: the de-rotated map samples the rotated one there."""
    shape = maps.shape
    flat = maps.reshape(-1, 1, *shape[-2:]).float()
    a = math.radians(angle_deg)
    theta = torch.tensor([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0]],
                         dtype=flat.dtype).expand(flat.shape[0], 2, 3)
    grid = F.affine_grid(theta, list(flat.shape), align_corners=False)
    return F.grid_sample(flat, grid, mode=mode, padding_mode="zeros", align_corners=False).reshape(shape)


def central_disk(size: int) -> np.ndarray:
    """The inscribed disk of a size x size image (what any stage rotation keeps in the field)."""
    c = (np.arange(size) + 0.5) / size - 0.5
    return (c[None, :] ** 2 + c[:, None] ** 2) <= 0.25


def pearson(a: np.ndarray, b: np.ndarray, where: np.ndarray | None = None) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if where is not None:
        a, b = a[where], b[where]
    a, b = a.ravel() - a.mean(), b.ravel() - b.mean()
    denominator = math.sqrt(float((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / denominator) if denominator > 0 else float("nan")

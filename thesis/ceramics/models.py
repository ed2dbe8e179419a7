"""The two classifiers of Section 5.5, built through timm: ResNet-18 (Table 11) and DeiT-Small
(Table 14: 12 blocks, 6 heads, width 384, MLP 1536, patch 16, 224 px).

`init` says where the weights come from:
  scratch             random initialisation, every parameter trained;
  pretrained          ImageNet-1k weights (timm's hub weights, from the local cache when offline,
                      or `checkpoint`: a weights file or a timm hub-layout directory); the thesis
                      froze the backbone and retrained "only the final classification layers"
                      (`CeramicsClassifier(trainable="head")`);
  synthetic_pretrain  the miniature's stand-in for ImageNet (spec C.5): the backbone of a model
                      trained on a disjoint procedural-texture task, saved in timm's hub layout and
                      loaded through the same code as `pretrained`; labelled as such everywhere.
The classification head is re-initialised for the ten fabric classes whenever weights are loaded.
"""

from __future__ import annotations

from typing import Any, Mapping

from omegaconf import DictConfig, OmegaConf
from torch import nn

from thesis.core.errors import ConfigError
from thesis.core.models import create_timm_model

INITS = ("scratch", "pretrained", "synthetic_pretrain")


def build_classifier(name: str, init: str = "scratch", num_classes: int = 10, checkpoint: str | None = None,
                     model_args: Mapping[str, Any] | None = None) -> nn.Module:
    """A timm classifier `name` with `num_classes` outputs, initialised as `init` says;
    `model_args` go to `timm.create_model` (image size, widths, depth of the small twins)."""
    if init not in INITS:
        raise ConfigError(f"model.init={init!r}: use one of {', '.join(INITS)}")
    if isinstance(model_args, DictConfig):
        model_args = OmegaConf.to_container(model_args, resolve=True)
    args = dict(model_args or {})
    if init == "scratch":
        return create_timm_model(name, pretrained=False, num_classes=num_classes, **args)
    if init == "synthetic_pretrain" and checkpoint is None:
        raise ConfigError("model.init=synthetic_pretrain needs model.checkpoint (the texture-pretraining stage's "
                          "directory; the miniature's runner sets it)")
    return create_timm_model(name, pretrained=checkpoint is None, checkpoint=checkpoint, num_classes=num_classes,
                             **args)


def classifier_of(model: nn.Module) -> nn.Module:
    """The final classification layer(s) of a timm model."""
    if hasattr(model, "get_classifier"):
        return model.get_classifier()
    raise ConfigError(f"{type(model).__name__} has no get_classifier(): not a timm classifier")


def freeze_backbone(model: nn.Module) -> list[str]:
    """Freeze every parameter but the classifier's; return the names of the trainable ones."""
    head = {id(p) for p in classifier_of(model).parameters()}
    trainable = []
    for name, param in model.named_parameters():
        param.requires_grad_(id(param) in head)
        if id(param) in head:
            trainable.append(name)
    return trainable


def is_vit(model: nn.Module) -> bool:
    return hasattr(model, "blocks") and hasattr(model, "patch_embed")


def last_conv_stage(model: nn.Module) -> nn.Module:
    """Grad-CAM's layer: the last convolutional stage (timm ResNet's `layer4`)."""
    for name in ("layer4", "stages", "features"):
        layer = getattr(model, name, None)
        if layer is not None:
            return layer[-1] if name == "stages" else layer
    raise ConfigError(f"no last convolutional stage found in {type(model).__name__}: pass the layer explicitly")


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

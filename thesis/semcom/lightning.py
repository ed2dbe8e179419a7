"""Training of the semcom models: one LightningModule for all three stages.

- backbone: a plain ViT, cross-entropy only (also the static ViT AE backbone and the clean
  classifier of the digital baselines);
- selection: the adaptive ViT, alpha ~ U(alpha_range) per sample, loss
  CE + lambda_s * B(s) + lambda_r * R (eq. 3.33), soft masks;
- djscc: the link attached after block s, one codec drawn per batch, per-sample SNR ~ U(train_snr)
  (robust) or no noise (noiseless); adaptive models keep drawing alpha.
Evaluation steps (Lightning's val/test) run hard selection at `eval_alpha` through the largest
codec, noiseless: a quick health check; the chapter's numbers come from `thesis.semcom.evaluate`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from thesis.core.errors import ConfigError
from thesis.core.modules import SupervisedModule
from thesis.semcom.model import SemanticViT
from thesis.semcom.selector import mean_mask, selection_losses

REGIMES = ("robust", "noiseless")


class LinkStageModule(SupervisedModule):
    """What the ViT and the MobileNet pipelines share: the DJSCC regime, the per-sample SNR range and,
    with `freeze_backbone` and a link attached, a stage where only the link (`link.*` parameters)
    trains while `backbone()` stays in eval mode."""

    def __init__(self, model: nn.Module, regime: str, train_snr: tuple[float, float], freeze_backbone: bool,
                 **optimiser):
        super().__init__(model, **optimiser)
        if regime not in REGIMES:
            raise ConfigError(f"djscc regime must be one of {REGIMES}, got {regime!r}")
        self.regime, self.train_snr = regime, tuple(train_snr)
        self.freeze_backbone = freeze_backbone and model.link is not None
        if self.freeze_backbone:
            for name, p in model.named_parameters():
                p.requires_grad_(name.startswith("link."))

    def backbone(self) -> nn.Module:
        raise NotImplementedError

    def train(self, mode: bool = True):
        super().train(mode)
        if mode and self.freeze_backbone:
            self.backbone().eval()
        return self


class SemcomModule(LinkStageModule):
    def __init__(self, model: SemanticViT, lr: float = 1e-3, weight_decay: float = 0.05, cosine: bool = True,
                 lambda_s: float = 2.0, lambda_r: float = 1.0, epsilon: float = 0.01, mean_over: str = "thesis",
                 hard_penalty: bool = False, alpha_range: tuple[float, float] = (1e-3, 1.0),
                 regime: str = "robust", train_snr: tuple[float, float] = (-20.0, 20.0),
                 freeze_backbone: bool = False, eval_alpha: float = 1.0):
        super().__init__(model, regime, train_snr, freeze_backbone, lr=lr, weight_decay=weight_decay, cosine=cosine)
        self.lambda_s, self.lambda_r, self.epsilon = lambda_s, lambda_r, epsilon
        self.mean_over, self.hard_penalty = mean_over, hard_penalty
        self.alpha_range = tuple(alpha_range)
        self.eval_alpha = eval_alpha

    def backbone(self) -> nn.Module:
        return self.model.vit  # frozen: no dropout / drop-path noise

    def _alpha(self, batch: int) -> torch.Tensor:
        low, high = self.alpha_range
        return torch.empty(batch, device=self.device).uniform_(low, high)

    def loss_and_logits(self, batch):
        images, labels = batch
        model: SemanticViT = self.model
        size = images.shape[0]
        if not self.training:
            ratio = max(model.link.ratios) if model.link is not None else None
            logits, trace = model(images, self.eval_alpha, ratio, None)
            kept = trace.kept_patches.float().mean() / model.num_patches
            return F.cross_entropy(logits, labels), logits, {"kept_fraction": kept}
        alpha = self._alpha(size) if model.adaptive else None
        ratio, snr = None, None
        if model.link is not None:
            ratio = model.link.ratios[int(torch.randint(len(model.link.ratios), ()))]
            if self.regime == "robust":
                snr = torch.empty(size, device=self.device).uniform_(*self.train_snr)
        logits, trace = model(images, alpha, ratio, snr)
        loss = F.cross_entropy(logits, labels)
        extra: dict[str, torch.Tensor] = {}
        if model.adaptive and trace.masks:
            last, early = selection_losses(trace.masks, alpha, self.epsilon, self.mean_over, self.hard_penalty,
                                           model.delta, trace.margins)
            loss = loss + self.lambda_s * last + self.lambda_r * early
            extra = {"budget_last": last.detach(), "budget_early": early.detach(),
                     "soft_mean": mean_mask(trace.masks[-1], self.mean_over).mean().detach()}
        return loss, logits, extra

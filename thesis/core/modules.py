"""LightningModule bases shared by chapters: optimiser set-up and classification metrics."""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn


class SupervisedModule(L.LightningModule):
    """AdamW with optional cosine decay; subclasses define `loss_and_logits(batch)`."""

    def __init__(self, model: nn.Module, lr: float = 1e-3, weight_decay: float = 0.0, cosine: bool = True):
        super().__init__()
        self.model = model
        self.lr = lr
        self.weight_decay = weight_decay
        self.cosine = cosine

    def configure_optimizers(self):
        """AdamW over the trainable parameters (frozen ones would get no gradient and no update anyway)."""
        params = [p for p in self.parameters() if p.requires_grad]
        return self.with_schedule(torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay))

    def with_schedule(self, optimizer: torch.optim.Optimizer):
        """`optimizer` alone, or with per-step cosine decay over the whole fit when `cosine`."""
        if not self.cosine:
            return optimizer
        steps = max(1, int(self.trainer.estimated_stepping_batches))
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def loss_and_logits(self, batch) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """Return (loss, logits used for accuracy, extra scalars to log)."""
        raise NotImplementedError

    def _step(self, batch, split: str) -> torch.Tensor:
        loss, logits, extra = self.loss_and_logits(batch)
        acc = (logits.argmax(-1) == batch[1]).float().mean()
        self.log(f"{split}/loss", loss, prog_bar=True, on_step=False, on_epoch=True)
        self.log(f"{split}/acc", acc, prog_bar=True, on_step=False, on_epoch=True)
        for name, value in extra.items():
            self.log(f"{split}/{name}", value, on_step=False, on_epoch=True)
        return loss

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def test_step(self, batch, batch_idx):
        self._step(batch, "test")


class ClassificationModule(SupervisedModule):
    """Cross-entropy classification of `model(x)` logits."""

    def loss_and_logits(self, batch):
        x, y = batch
        logits = self.model(x)
        return F.cross_entropy(logits, y), logits, {}

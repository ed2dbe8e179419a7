"""Training of Section 5.5 (Tables 12 and 15): cross-entropy, AdamW, ReduceLROnPlateau (ResNet-18)
or cosine decay (DeiT-Small); `trainable="head"` freezes the backbone and trains only the
classification layer (the thesis's transfer learning), its batch-norm statistics included.

Test accuracy is tracked per epoch for the curves only (the val loader is the test part, as the
thesis plotted it); the final weights are evaluated, nothing is selected on the test set.
"""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from thesis.ceramics.metrics import classification_metrics
from thesis.ceramics.models import classifier_of, freeze_backbone
from thesis.core.errors import ConfigError

SCHEDULERS = ("plateau", "cosine", "none")
TRAINABLE = ("all", "head")


class CeramicsClassifier(L.LightningModule):
    def __init__(self, model: nn.Module, num_classes: int = 10, lr: float = 3e-4, weight_decay: float = 3e-4,
                 scheduler: str = "plateau", trainable: str = "all", plateau_patience: int = 5,
                 plateau_factor: float = 0.1, plateau_monitor: str = "train/loss"):
        super().__init__()
        if scheduler not in SCHEDULERS:
            raise ConfigError(f"method.module.scheduler={scheduler!r}: use one of {', '.join(SCHEDULERS)}")
        if trainable not in TRAINABLE:
            raise ConfigError(f"method.module.trainable={trainable!r}: use one of {', '.join(TRAINABLE)}")
        self.model, self.num_classes = model, num_classes
        self.lr, self.weight_decay, self.scheduler = lr, weight_decay, scheduler
        self.trainable = trainable
        self.plateau = {"patience": plateau_patience, "factor": plateau_factor, "monitor": plateau_monitor}
        if trainable == "head":
            freeze_backbone(model)
        self.curve: list[dict[str, float]] = []
        self.test_output: dict[str, np.ndarray] = {}
        self._test: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.trainable == "head" and mode:  # the frozen backbone keeps its batch-norm statistics
            self.model.eval()
            classifier_of(self.model).train(True)
        return self

    def configure_optimizers(self):
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
        if self.scheduler == "plateau":
            schedule = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=self.plateau["factor"],
                                                                  patience=self.plateau["patience"])
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "epoch",
                                                             "monitor": self.plateau["monitor"]}}
        if self.scheduler == "cosine":
            steps = max(1, int(self.trainer.estimated_stepping_batches))
            schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
        return optimizer

    def _step(self, batch, split: str):
        x, y = batch
        logits = self.model(x)
        loss = F.cross_entropy(logits, y)
        self.log(f"{split}/loss", loss, on_step=False, on_epoch=True, prog_bar=split == "train", batch_size=len(y))
        self.log(f"{split}/acc", (logits.argmax(-1) == y).float().mean(), on_step=False, on_epoch=True,
                 prog_bar=True, batch_size=len(y))
        return loss, logits

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")[0]

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def on_train_epoch_end(self) -> None:
        metrics = self.trainer.callback_metrics
        row = {"epoch": int(self.current_epoch) + 1}
        for key in ("train/loss", "train/acc", "val/loss", "val/acc"):
            if key in metrics:
                row[key.replace("/", "_")] = float(metrics[key])
        self.curve.append(row)

    def test_step(self, batch, batch_idx):
        x, y = batch
        logits = self.model(x)
        self._test.append((logits.detach().float().cpu(), y.detach().cpu()))

    def on_test_epoch_end(self) -> None:
        logits = torch.cat([l for l, _ in self._test])
        labels = torch.cat([y for _, y in self._test]).numpy()
        self._test = []
        preds = logits.argmax(-1).numpy()
        self.test_output = {"labels": labels, "preds": preds, "probs": logits.softmax(-1).numpy()}
        for name, value in classification_metrics(labels, preds, self.num_classes).items():
            self.log(f"test/{name}", float(np.nan_to_num(value)))

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["ceramics_curve"] = list(self.curve)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.curve = list(checkpoint.get("ceramics_curve", []))

"""Training objective of Section 5.2: cross-entropy + w_load x load-balancing loss (eq. 5.11,
the MoE layers' CV^2 averaged over layers), Adam with a step decay, and the best-validation-loss
weights kept for testing (the thesis's early stopping on validation loss).

The thesis does not give the optimiser; Adam (lr 1e-3) with StepLR(45 epochs, x0.1) is the
authors' code default (README). Test metrics are computed over the whole test split at epoch end.
"""

from __future__ import annotations

import copy

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from thesis.moegt.metrics import binary_metrics


class GraphClassifierModule(L.LightningModule):
    def __init__(self, model: nn.Module, lr: float = 1e-3, w_load: float = 1.0, step_size: int = 45,
                 gamma: float = 0.1):
        super().__init__()
        self.model, self.lr, self.w_load = model, lr, w_load
        self.step_size, self.gamma = step_size, gamma
        self.best_val_loss = float("inf")
        self.best_state: dict[str, torch.Tensor] | None = None
        self._test_scores: list[torch.Tensor] = []
        self._test_labels: list[torch.Tensor] = []

    def configure_optimizers(self):
        optimizer = torch.optim.Adam(self.parameters(), lr=self.lr)
        schedule = torch.optim.lr_scheduler.StepLR(optimizer, step_size=self.step_size, gamma=self.gamma)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "epoch"}}

    def _step(self, batch, split: str):
        out = self.model(batch)
        ce = F.cross_entropy(out.logits, batch.y)
        loss = ce + self.w_load * out.balance
        size = int(batch.num_graphs)
        self.log(f"{split}/loss", loss, on_step=False, on_epoch=True, batch_size=size, prog_bar=True)
        self.log(f"{split}/ce", ce, on_step=False, on_epoch=True, batch_size=size)
        self.log(f"{split}/load_loss", out.balance, on_step=False, on_epoch=True, batch_size=size)
        self.log(f"{split}/batch_acc", (out.logits.argmax(-1) == batch.y).float().mean(), on_step=False,
                 on_epoch=True, batch_size=size)
        return loss, out

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")[0]

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        loss = self.trainer.callback_metrics.get("val/loss")
        if loss is not None and not self.trainer.sanity_checking and float(loss) < self.best_val_loss:
            self.best_val_loss = float(loss)
            self.best_state = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}

    def on_test_start(self) -> None:
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)

    def test_step(self, batch, batch_idx):
        _, out = self._step(batch, "test")
        self._test_scores.append(out.logits.softmax(-1)[:, 1].detach().cpu())
        self._test_labels.append(batch.y.detach().cpu())

    def on_test_epoch_end(self) -> None:
        scores, labels = torch.cat(self._test_scores).numpy(), torch.cat(self._test_labels).numpy()
        self._test_scores, self._test_labels = [], []
        for name, value in binary_metrics(labels, scores).items():
            self.log(f"test/{name}", float(np.nan_to_num(value)))

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["best_val"] = {"loss": self.best_val_loss, "state": copy.copy(self.best_state)}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        best = checkpoint.get("best_val", {})
        self.best_val_loss, self.best_state = best.get("loss", float("inf")), best.get("state")

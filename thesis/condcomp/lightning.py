"""Training objectives of Chapter 2's models as LightningModules (run by the core trainer)."""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F

from thesis.condcomp.balancing import router_z_loss, switch_aux
from thesis.condcomp.early_exit import MultiExit, multi_exit_loss
from thesis.core.modules import SupervisedModule


class EarlyExitModule(SupervisedModule):
    """Joint training of every exit with L = α CE(final) + Σ β_i CE(exit i) (eq. 2.15).

    Accuracy is reported for the final exit, and per exit as `<split>/exit<i>_acc`.
    """

    def __init__(self, model: MultiExit, alpha: float = 1.0, betas: Sequence[float] | None = None, **optim):
        super().__init__(model, **optim)
        self.alpha = alpha
        self.betas = None if betas is None else list(betas)

    def loss_and_logits(self, batch):
        x, y = batch
        outputs = self.model(x)
        loss = multi_exit_loss(outputs, y, alpha=self.alpha, betas=self.betas)
        extra = {f"exit{i}_acc": (o.argmax(-1) == y).float().mean() for i, o in enumerate(outputs)}
        return loss, outputs[-1], extra


class MoEModule(SupervisedModule):
    """Cross-entropy + `balance_coef` x Switch load-balancing loss + `z_coef` x router z-loss.

    The model returns (logits, routing); routing carries the router logits and the dispatch mask.
    """

    def __init__(self, model, balance_coef: float = 0.01, z_coef: float = 0.0, **optim):
        super().__init__(model, **optim)
        self.balance_coef = balance_coef
        self.z_coef = z_coef

    def loss_and_logits(self, batch):
        x, y = batch
        logits, routing = self.model(x)
        balance = switch_aux(routing.probs, routing.dispatch, alpha=1.0)
        z = router_z_loss(routing.logits)
        loss = F.cross_entropy(logits, y) + self.balance_coef * balance + self.z_coef * z
        return loss, logits, {"balance_loss": balance, "z_loss": z}

"""Fine-tuning a timm ViT under a schedule (ALaST or a baseline), with its cost measured per step.

One LightningModule serves every row of the thesis's comparison: the schedule decides each step
which blocks train and how many tokens flow (`thesis.alast.schedules`), `adapter` adds LoRA
(peft) so that the same schedules act on adapters only (LoRA, LoRA + ALaST). Per step:

1. the schedule's plan sets `requires_grad` (a frozen block's weights get no gradient, so Adam,
   with gradients reset to None, leaves them and their state untouched);
2. forward (`SelectiveViT`), cross-entropy, backward, Adam step, budget update: this is timed;
3. the step's FLOPs are counted from what it ran (`thesis.alast.costs.StepFlops`), untimed.

Evaluation runs the full model (every token, nothing dropped): ALaST is a training-time method.
The exception is ToMe, which by default merges tokens at evaluation too (`Schedule.eval_plan`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from thesis.alast.costs import StepFlops
from thesis.alast.lora import add_lora, is_adapter
from thesis.alast.meter import RunCosts, measure_step
from thesis.alast.schedules import ALaSTSchedule, Schedule
from thesis.alast.vit import ForwardRecord, SelectiveViT, StepPlan
from thesis.core.rundir import RunDir

HEAD_PREFIXES = ("head.", "fc_norm.")
OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}


class FineTuneModule(L.LightningModule):
    """Train `model` (a timm VisionTransformer with the task's head) as `schedule` plans each step.

    `adapter`: None, or LoRA settings ({rank, alpha, dropout, targets}); with adapters the base
    weights never train. `train_norm`: whether the final LayerNorm trains (the head always does).
    `bind_images`: how many training images the schedule may look at before training (FT top-k
    ranks blocks on them). `trace_every`: steps between rows of the budget/token trace.
    `record_grad_norms`: keep per-block gradient norms next to the class-token deltas (Fig. 3.14).
    """

    def __init__(self, model: nn.Module, schedule: Schedule, lr: float = 1e-4, optimizer: str = "adam",
                 weight_decay: float = 0.0, adapter: Mapping | None = None, train_norm: bool = True,
                 drop_at: str = "after_attn", keep_reference: str = "current", bind_images: int = 512,
                 trace_every: int = 10, record_grad_norms: bool = False):
        super().__init__()
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {sorted(OPTIMIZERS)}, got {optimizer!r}")
        self.automatic_optimization = False
        self.uses_adapters = adapter is not None
        if self.uses_adapters:
            add_lora(model, **adapter)
        self.net = SelectiveViT(model, drop_at=drop_at, keep_reference=keep_reference)
        self.schedule = schedule
        schedule.setup(self.net.num_layers)
        self.lr, self.optimizer_name, self.weight_decay = lr, optimizer, weight_decay
        self.train_norm = train_norm
        self.bind_images, self.trace_every, self.record_grad_norms = bind_images, trace_every, record_grad_norms
        self.costs = RunCosts()
        self.trace: list[dict] = []
        self.grad_rows: list[dict] = []
        self.curve: list[dict] = []
        self._val_correct = self._val_seen = 0
        self._flops: StepFlops | None = None
        self._groups = self._parameter_groups()

    # ---- which parameters a plan trains -------------------------------------------------------
    def _parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        groups: dict[str, list[nn.Parameter]] = {"stem": [], "norm": [], "head": [], "base": []}
        groups.update({f"block{l}": [] for l in range(self.net.num_layers)})
        for name, p in self.net.vit.named_parameters():
            if name.startswith("blocks."):
                adapter_or_full = is_adapter(name) or not self.uses_adapters
                groups[f"block{name.split('.')[1]}" if adapter_or_full else "base"].append(p)
            elif name.startswith(HEAD_PREFIXES):
                groups["head"].append(p)
            elif name.startswith("norm."):
                groups["norm"].append(p)
            else:
                groups["stem"].append(p)
        return groups

    def apply_plan(self, plan: StepPlan) -> None:
        """Set `requires_grad` of every parameter as `plan` says (adapters only, with LoRA)."""
        flags = {"stem": plan.train_stem and not self.uses_adapters, "norm": self.train_norm, "head": True,
                 "base": False}
        flags.update({f"block{l}": t for l, t in enumerate(plan.trainable)})
        for group, params in self._groups.items():
            for p in params:
                p.requires_grad_(flags[group])

    def configure_optimizers(self):
        params = [p for group, ps in self._groups.items() if group != "base" for p in ps]
        return OPTIMIZERS[self.optimizer_name](params, lr=self.lr, weight_decay=self.weight_decay)

    # ---- training ------------------------------------------------------------------------------
    def on_fit_start(self) -> None:
        images = []
        for batch, _ in self.trainer.datamodule.train_dataloader():
            images.append(batch)
            if sum(len(b) for b in images) >= self.bind_images:
                break
        self.schedule.bind(self.net.vit, torch.cat(images)[: self.bind_images].to(self.device))
        self._flops = StepFlops(self.net)

    def training_step(self, batch, batch_idx):
        images, labels = batch
        optimizer = self.optimizers()
        plan = self.schedule.plan()
        self.apply_plan(plan)
        record = ForwardRecord()
        with measure_step(self.costs, self.net, optimizer.optimizer, self.device):
            logits = self.net(images, plan, record)
            loss = F.cross_entropy(logits, labels)
            optimizer.zero_grad(set_to_none=True)
            self.manual_backward(loss)
            optimizer.step()
            self.schedule.observe(record)
        self.costs.flops += self._flops.step(tuple(images.shape), record)
        self._record(plan, record)
        self.log("train/loss", loss.detach(), prog_bar=True, on_step=False, on_epoch=True)
        self.log("train/acc", (logits.argmax(-1) == labels).float().mean(), on_step=False, on_epoch=True)
        return loss.detach()

    def _record(self, plan: StepPlan, record: ForwardRecord) -> None:
        step = self.costs.steps - 1
        if self.record_grad_norms:
            for l, delta in enumerate(record.delta.tolist()):
                grads = [p.grad.float().norm() ** 2 for p in self._groups[f"block{l}"] if p.grad is not None]
                norm = float(torch.stack(grads).sum().sqrt()) if grads else math.nan
                self.grad_rows.append({"step": step, "layer": l, "grad_norm": norm, "delta": delta})
        if step % self.trace_every:
            return
        budgets = self.schedule.budgets.budget.tolist() if isinstance(self.schedule, ALaSTSchedule) else None
        for l, delta in enumerate(record.delta.tolist()):
            self.trace.append({"step": step, "layer": l, "trainable": plan.trainable[l], "keep": plan.keep[l],
                               "budget": budgets[l] if budgets else math.nan, "delta": delta,
                               "tokens_in": record.tokens_in[l], "tokens_out": record.tokens_out[l]})

    # ---- evaluation ----------------------------------------------------------------------------
    def _evaluate(self, batch, split: str) -> torch.Tensor:
        images, labels = batch
        logits = self.net(images, self.schedule.eval_plan())
        correct = (logits.argmax(-1) == labels)
        self.log(f"{split}/loss", F.cross_entropy(logits, labels), on_step=False, on_epoch=True)
        self.log(f"{split}/acc", correct.float().mean(), prog_bar=True, on_step=False, on_epoch=True)
        return correct

    def validation_step(self, batch, batch_idx):
        correct = self._evaluate(batch, "val")
        self._val_correct += int(correct.sum())
        self._val_seen += len(correct)

    def on_validation_epoch_end(self) -> None:
        if not self.trainer.sanity_checking and self._val_seen:
            self.curve.append({"epoch": self.current_epoch, "step": self.costs.steps,
                               "train_s": self.costs.seconds, "train_flops": self.costs.flops,
                               "val_acc": self._val_correct / self._val_seen})
        self._val_correct = self._val_seen = 0

    def test_step(self, batch, batch_idx):
        self._evaluate(batch, "test")

    # ---- resume and report ---------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["alast"] = {"costs": self.costs.state(), "trace": self.trace, "grad_rows": self.grad_rows,
                               "curve": self.curve}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        saved = checkpoint.get("alast", {})
        self.costs = RunCosts(**saved.get("costs", {}))
        self.trace, self.grad_rows, self.curve = saved.get("trace", []), saved.get("grad_rows", []), saved.get("curve", [])

    def final_metrics(self, datamodule=None, run: RunDir | None = None) -> dict[str, object]:
        """Cost metrics of the whole run; the per-step trace, curve and gradient tables go to `run`."""
        kind = "cuda" if self.device.type == "cuda" else "saved_tensors_proxy"
        metrics = self.costs.metrics(kind)
        if isinstance(self.schedule, ALaSTSchedule):
            metrics.update({f"budget/final/{l}": b for l, b in enumerate(self.schedule.budgets.budget.tolist())})
        if self.trace:
            first_in = {r["step"]: r["tokens_in"] for r in self.trace if r["layer"] == 0}
            fractions = [r["tokens_out"] / first_in[r["step"]] for r in self.trace]
            metrics["tokens/mean_kept_fraction"] = sum(fractions) / len(fractions)
        if run is not None:
            for name, rows in (("budget_trace", self.trace), ("curve", self.curve), ("grad_norms", self.grad_rows)):
                if rows:
                    run.write_table(name, rows)
        return metrics

"""Fine-tuning steps through Lightning: frozen blocks get no gradient and no update (Adam state
notwithstanding), the head always trains, LoRA + ALaST trains only the chosen blocks' adapters,
and the run reports C, M and T."""


import lightning as L
import pytest
import torch

from thesis.alast.canvas import CanvasTransfer
from thesis.alast.module import FineTuneModule
from thesis.alast.schedules import ALaSTSchedule, Schedule
from thesis.alast.vit import StepPlan


class Scripted(Schedule):
    """Plays back a fixed list of plans and remembers what it handed out."""

    def __init__(self, plans):
        super().__init__()
        self.plans, self.given = list(plans), []

    def plan(self):
        self.given.append(self.plans[len(self.given)])
        return self.given[-1]


class Recording(ALaSTSchedule):
    def plan(self):
        self.last = super().plan()
        return self.last


def fit_steps(module, steps):
    data = CanvasTransfer(canvas=16, scale=1, num_train=8, num_test=4, batch_size=4, classes=(0, 1, 2, 3))
    trainer = L.Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(module, data)
    return module


def params_of(module, prefix):
    return {n: p.detach().clone() for n, p in module.net.vit.named_parameters() if n.startswith(prefix)}


def changed(before, module):
    now = dict(module.net.vit.named_parameters())
    return {n for n, p in before.items() if not torch.equal(p, now[n].detach())}


def test_frozen_blocks_get_no_gradient_and_no_update_even_with_adam_state(vit):
    plans = [StepPlan((True, False, False), (1.0,) * 3), StepPlan((False, True, False), (1.0,) * 3)]
    module = FineTuneModule(vit, Scripted(plans), lr=1e-2)
    start = {n: p.detach().clone() for n, p in vit.named_parameters()}
    fit_steps(module, 1)
    after_first = {n: p.detach().clone() for n, p in vit.named_parameters()}
    assert {n.split(".")[1] for n in changed(start, module) if n.startswith("blocks.")} == {"0"}
    fit_steps(module, 1)  # one more step of the same module: block 0 has Adam state, now frozen
    moved = changed(after_first, module)
    assert {n.split(".")[1] for n in moved if n.startswith("blocks.")} == {"1"}
    assert {"head.weight", "head.bias"} <= moved
    assert all(p.grad is None for n, p in vit.named_parameters() if n.startswith(("blocks.0.", "blocks.2.")))
    assert not any(n.startswith(("patch_embed", "cls_token", "pos_embed")) for n in changed(start, module))


def test_alast_trains_exactly_k_blocks_per_step(make_vit):
    vit = make_vit(depth=4)
    module = FineTuneModule(vit, Recording(k=2, budget_lr=0.1), lr=1e-2)
    start = params_of(module, "blocks.")
    fit_steps(module, 1)
    trained = {int(n.split(".")[1]) for n in changed(start, module)}
    assert trained == {i for i, t in enumerate(module.schedule.last.trainable) if t} and len(trained) == 2


def test_lora_alast_trains_only_the_adapters_of_the_chosen_blocks(make_vit):
    pytest.importorskip("peft")
    vit = make_vit(depth=4)
    module = FineTuneModule(vit, Recording(k=2, budget_lr=1e-3), lr=1e-2, train_norm=False,
                            adapter={"rank": 2, "alpha": 4, "dropout": 0.0, "targets": ["qkv", "proj"]})
    start = params_of(module, "")
    fit_steps(module, 1)
    chosen = {i for i, t in enumerate(module.schedule.last.trainable) if t}
    moved = changed(start, module)
    assert moved - {"head.weight", "head.bias"}, "no adapter trained"
    for name in moved - {"head.weight", "head.bias"}:
        assert "lora_" in name and int(name.split(".")[1]) in chosen, name
    grads = {n for n, p in vit.named_parameters() if p.grad is not None}
    assert all("lora_" in n or n.startswith("head.") for n in grads)
    assert {int(n.split(".")[1]) for n in grads if "lora_" in n} == chosen


def test_a_run_reports_compute_memory_and_time(make_vit):
    module = fit_steps(FineTuneModule(make_vit(depth=2), ALaSTSchedule(k=1, budget_lr=0.5), lr=1e-3), 3)
    metrics = module.final_metrics()
    assert metrics["cost/steps"] == 3 and metrics["cost/train_flops"] > 0 and metrics["time/train_s"] > 0
    assert metrics["memory/kind"] == "saved_tensors_proxy" and metrics["memory/peak_mb"] > 0
    assert metrics["cost/train_pflops"] == pytest.approx(metrics["cost/train_flops"] / 1e15)
    assert {row["step"] for row in module.trace} == {0}  # trace_every=10
    assert set(metrics) >= {"budget/final/0", "budget/final/1", "tokens/mean_kept_fraction"}

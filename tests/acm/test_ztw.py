"""Zero Time Waste baseline (spec ch2_acm B.4-B.5): frozen backbone, cascading heads, geometric
ensembles, threshold sweep and per-exit FLOPs."""

import copy

import lightning as L
import pytest
import timm
import torch
from torch.utils.data import DataLoader, TensorDataset

from thesis.acm.ztw import (
    ZTW,
    ZTWEnsembleModule,
    ZTWHeadsModule,
    evaluate_thresholds,
    exit_flops,
    first_confident_exit,
)
from thesis.core.flops import count_flops

DEPTH = 4


def tiny_vit() -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=16, patch_size=4, in_chans=1,
                             embed_dim=48, depth=DEPTH, num_heads=3, num_classes=10)


@pytest.fixture
def ztw() -> ZTW:
    return ZTW(tiny_vit())


@pytest.fixture
def data() -> TensorDataset:
    torch.manual_seed(1)
    return TensorDataset(torch.randn(24, 1, 16, 16), torch.randint(0, 10, (24,)))


def test_exits_and_backbone_stays_frozen_in_eval_mode(ztw):
    x = torch.randn(3, 1, 16, 16)
    outputs = ztw.train()(x)
    assert len(outputs) == DEPTH and all(o.shape == (3, 10) for o in outputs)
    assert not ztw.vit.training and ztw.heads.training
    assert not any(p.requires_grad for p in ztw.vit.parameters())
    assert torch.equal(outputs[-1], ztw.vit(x))  # the last exit is the backbone's own classifier


def test_head_training_changes_heads_only(ztw, data):
    backbone = copy.deepcopy(ztw.vit.state_dict())
    heads = copy.deepcopy(ztw.heads.state_dict())
    module = ZTWHeadsModule(ztw, cosine=False)
    trainer = L.Trainer(max_steps=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu")
    trainer.fit(module, DataLoader(data, batch_size=8))
    assert all(torch.equal(v, ztw.vit.state_dict()[k]) for k, v in backbone.items())
    assert any(not torch.equal(v, ztw.heads.state_dict()[k]) for k, v in heads.items())


def test_head_loss_has_no_backbone_or_ensemble_gradient(ztw, data):
    module = ZTWHeadsModule(ztw)
    loss, logits, extra = module.loss_and_logits(data.tensors)
    loss.backward()
    assert all(p.grad is None for p in ztw.vit.parameters())
    assert all(p.grad is None for p in ztw.ensembles.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in ztw.heads.parameters())
    assert logits.shape == (24, 10) and len(extra) == DEPTH - 1


def test_cascade_feeds_previous_logits_without_gradient(ztw):
    x = torch.randn(4, 1, 16, 16)
    heads, _ = ztw.head_outputs(x)
    heads[1].sum().backward()
    assert all(p.grad is None for p in ztw.heads[0].parameters())  # detached cascade input
    with torch.no_grad():
        ztw.heads[0].out.bias.add_(torch.randn(10))
    assert not torch.allclose(ztw.head_outputs(x)[0][1], heads[1])  # ...but head 1 reads head 0


def test_ensemble_training_changes_ensembles_only(ztw, data):
    module = ZTWEnsembleModule(ztw)
    loss, _, _ = module.loss_and_logits(data.tensors)
    loss.backward()
    assert all(p.grad is None for p in ztw.heads.parameters())
    assert all(p.grad is None for p in ztw.vit.parameters())
    assert all(p.grad is not None for p in ztw.ensembles.parameters())


def test_ensemble_reduces_to_its_own_head(ztw):
    x = torch.randn(5, 1, 16, 16)
    with torch.no_grad():
        for i, ensemble in enumerate(ztw.ensembles):
            ensemble.weight.fill_(-100.0)  # exp(-100) ~ 0: earlier heads switched off
            ensemble.weight[i] = 0.0
            ensemble.bias.zero_()
        heads, _ = ztw.head_outputs(x)
        for head, ensemble in zip(heads, ztw.ensemble_outputs(heads)):
            assert torch.allclose(ensemble, head.log_softmax(-1), atol=1e-5)
            assert torch.allclose(ensemble.softmax(-1), head.softmax(-1), atol=1e-6)


def test_ensemble_starts_as_mean_of_log_probabilities(ztw):
    log_probs = torch.randn(2, 3, 10).log_softmax(-1)
    with torch.no_grad():
        out = ztw.ensembles[2](log_probs)
    assert torch.allclose(out, log_probs.mean(1), atol=0.05)


def test_exit_rule_is_strict_and_last_exit_accepts():
    confidence = torch.tensor([[0.3, 0.9, 0.2], [1.0, 1.0, 0.1], [0.1, 0.2, 0.3]])
    assert first_confident_exit(confidence, 0.5).tolist() == [1, 0, 2]
    assert first_confident_exit(confidence, 0.0).tolist() == [0, 0, 0]
    assert first_confident_exit(confidence, 1.0).tolist() == [2, 2, 2]


def test_exit_flops_are_counted_cumulatively(ztw):
    x = torch.randn(1, 1, 16, 16)
    costs = exit_flops(ztw, x)
    report = count_flops(ztw, x)
    assert costs[-1] == report.total  # the full forward computes every head and exit
    assert costs[0] == sum(report.under(p) for p in ("vit.patch_embed", "vit.blocks.0", "heads.0"))
    assert all(a < b for a, b in zip(costs, costs[1:]))


def test_threshold_sweep_goes_from_first_to_last_exit(ztw, data):
    loader = DataLoader(data, batch_size=10)
    thresholds = [0.0, 0.1, 0.12, 0.15, 0.2, 0.5, 1.0, 1.5]
    rows = evaluate_thresholds(ztw, loader, thresholds)
    costs = exit_flops(ztw, data.tensors[0][:1])
    x, y = data.tensors
    with torch.no_grad():
        outputs = ztw(x)
    assert [r["setting"] for r in rows] == [f"thr={t:g}" for t in thresholds]
    assert rows[0]["mean_exit"] == 0 and rows[0]["flops"] == pytest.approx(costs[0])
    assert rows[0]["accuracy"] == pytest.approx(float((outputs[0].argmax(-1) == y).float().mean()))
    assert rows[-1]["mean_exit"] == DEPTH - 1 and rows[-1]["flops"] == pytest.approx(costs[-1])
    assert rows[-1]["accuracy"] == pytest.approx(float((outputs[-1].argmax(-1) == y).float().mean()))
    flops = [r["flops"] for r in rows]
    assert all(a <= b for a, b in zip(flops, flops[1:]))
    assert all(r["method"] == "ztw" for r in rows)

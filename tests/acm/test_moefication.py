"""MoEfication baseline (spec ch2_acm B.5, D.a-b): ReLUfication, balanced split, exact dense
equivalence at k = E, FLOPs of top-k routing, router targets and router training."""

import copy

import lightning as L
import numpy as np
import pytest
import timm
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from thesis.acm.moefication import (
    MoEficationRouterModule,
    MoEfiedMLP,
    balanced_clusters,
    evaluate_topk,
    moefied,
    moefy,
    relufy,
    router_targets,
    top_k,
)
from thesis.core.flops import count_flops

EXPERTS, ROUTER_HIDDEN, DIM, D_FF, TOKENS = 8, 16, 48, 192, 17  # 16 patches + class token


def tiny_vit() -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=16, patch_size=4, in_chans=1,
                             embed_dim=DIM, depth=2, num_heads=3, num_classes=10)


@pytest.fixture
def moe_vit() -> nn.Module:
    vit = relufy(tiny_vit())
    with torch.no_grad():  # a mix of positive and negative pre-activations, so ReLU matters
        for block in vit.blocks:
            block.mlp.fc1.bias.normal_(0, 0.5)
            block.mlp.fc2.bias.normal_(0, 0.5)
    moefy(vit, EXPERTS, ROUTER_HIDDEN, seed=0)
    return vit.eval()


def test_relufy_replaces_every_mlp_activation():
    vit = tiny_vit()
    assert all(isinstance(b.mlp.act, nn.GELU) for b in vit.blocks)
    x = torch.randn(2, 1, 16, 16)
    before = vit.eval()(x)
    relufy(vit)
    assert all(isinstance(b.mlp.act, nn.ReLU) for b in vit.blocks)
    assert not torch.allclose(before, vit(x))


def _separated_directions(rng: np.random.Generator, clusters: int, size: int,
                          dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Points scattered tightly around `clusters` orthogonal directions, with random lengths (the
    clustering normalises rows, so only directions should matter), shuffled."""
    directions = np.linalg.qr(rng.standard_normal((dim, clusters)))[0].T
    truth = np.repeat(np.arange(clusters), size)
    points = directions[truth] + 0.05 * rng.standard_normal((clusters * size, dim))
    points *= rng.uniform(0.5, 3.0, (clusters * size, 1))
    order = rng.permutation(len(points))
    return points[order], truth[order]


def test_balanced_clusters_sizes_determinism_and_recovery():
    rng = np.random.default_rng(0)
    rows = rng.standard_normal((192, 48))
    labels = balanced_clusters(rows, 16, seed=3)
    assert np.array_equal(np.bincount(labels, minlength=16), np.full(16, 12))
    assert np.array_equal(labels, balanced_clusters(rows, 16, seed=3))

    points, truth = _separated_directions(rng, clusters=6, size=10, dim=20)
    found = balanced_clusters(points, 6, seed=0)
    assert np.array_equal(np.bincount(found), np.full(6, 10))
    for cluster in range(6):  # each found cluster is exactly one true cluster
        assert len(set(truth[found == cluster])) == 1


def test_balanced_clusters_rejects_uneven_split():
    with pytest.raises(ValueError):
        balanced_clusters(np.ones((10, 3)), 4)


def test_moefied_mlp_needs_relu_and_equal_experts():
    with pytest.raises(ValueError):
        MoEfiedMLP(tiny_vit().blocks[0].mlp, np.arange(D_FF) % EXPERTS)
    with pytest.raises(ValueError):
        MoEfiedMLP(relufy(tiny_vit()).blocks[0].mlp, np.arange(D_FF) < 10)


def test_all_experts_equal_the_dense_relu_mlp():
    torch.manual_seed(0)
    vit = relufy(tiny_vit()).double().eval()
    dense = copy.deepcopy(vit)
    layers = moefy(vit, EXPERTS, ROUTER_HIDDEN, seed=0)
    x = torch.randn(3, 1, 16, 16, dtype=torch.float64)
    tokens = torch.randn(3, TOKENS, DIM, dtype=torch.float64)
    for i, layer in enumerate(layers.values()):
        assert layer.k == EXPERTS
        assert torch.allclose(layer(tokens), dense.blocks[i].mlp(tokens), rtol=0, atol=1e-12)
        assert torch.equal(layer.experts_per_token, torch.full((3, TOKENS), EXPERTS))
    assert torch.allclose(vit(x), dense(x), rtol=0, atol=1e-12)


def test_top_k_runs_only_the_chosen_experts(moe_vit):
    layer = moefied(moe_vit)["blocks.0.mlp"]
    tokens = torch.randn(2, TOKENS, DIM)
    with top_k({"l": layer}, 3):
        out = layer(tokens)
    assert layer.k == EXPERTS  # restored
    chosen = layer.last_dispatch
    assert torch.equal(chosen.sum(-1), torch.full((2, TOKENS), 3))
    assert torch.equal(chosen, torch.zeros_like(chosen).scatter(-1, layer.router(tokens).topk(3).indices, True))
    hidden = layer.hidden(tokens) * chosen.unsqueeze(-1)  # (..., E, m), unchosen experts zeroed
    expected = torch.einsum("bteh,edh->btd", hidden, layer.w2) + layer.b2
    assert torch.allclose(out, expected, atol=1e-5)


def test_flops_monotone_in_k_and_priced_per_executed_expert(moe_vit):
    x = torch.randn(2, 1, 16, 16)
    dense_mlp_macs = 2 * TOKENS * (DIM * D_FF + D_FF * DIM)  # 2 samples
    router_macs = 2 * TOKENS * (DIM * ROUTER_HIDDEN + ROUTER_HIDDEN * EXPERTS)
    layers = moefied(moe_vit)
    totals = []
    for k in range(1, EXPERTS + 1):
        with top_k(layers, k):
            report = count_flops(moe_vit, x)
        for path in layers:
            assert report.under(path) == dense_mlp_macs * k // EXPERTS + router_macs
            assert report.under(f"{path}.router") == router_macs
        totals.append(report.total)
    assert all(a < b for a, b in zip(totals, totals[1:]))


def test_router_targets_in_unit_interval_with_max_one(moe_vit):
    layer = moefied(moe_vit)["blocks.1.mlp"]
    targets = router_targets(layer, torch.randn(4, TOKENS, DIM))
    assert targets.shape == (4, TOKENS, EXPERTS)
    assert targets.min() >= 0 and targets.max() <= 1
    assert torch.allclose(targets.amax(-1), torch.ones(4, TOKENS))
    silent = copy.deepcopy(layer)  # a token on which no neuron fires: targets 0, not NaN
    with torch.no_grad():
        silent.b1.fill_(-1.0)
    assert torch.equal(router_targets(silent, torch.zeros(1, DIM)), torch.zeros(1, EXPERTS))


def _random_batches(n: int = 64) -> TensorDataset:
    torch.manual_seed(1)
    return TensorDataset(torch.randn(n, 1, 16, 16), torch.randint(0, 10, (n,)))


def test_router_training_reduces_router_loss_and_trains_only_routers(moe_vit):
    module = MoEficationRouterModule(moe_vit, lr=1e-2)
    trainable = {n for n, p in module.named_parameters() if p.requires_grad}
    assert trainable and all(".router." in n for n in trainable)
    x, y = _random_batches(32).tensors
    optimizer = torch.optim.Adam([p for p in module.parameters() if p.requires_grad], lr=1e-2)
    module.train()
    losses = []
    for _ in range(15):
        loss, logits, extra = module.loss_and_logits((x, y))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.9 * losses[0]
    assert logits.shape == (32, 10) and torch.equal(extra["router_loss"], loss)


def test_router_module_fits_with_lightning_and_evaluates_top_k(moe_vit, tmp_path):
    loader = DataLoader(_random_batches(), batch_size=16)
    before = {n: p.clone() for n, p in moe_vit.named_parameters()}
    trainer = L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path, accelerator="cpu")
    trainer.fit(MoEficationRouterModule(moe_vit), loader, loader)
    assert {"train/router_loss", "val/router_loss", "val/acc"} <= set(trainer.callback_metrics)
    changed = {n for n, p in moe_vit.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all(".router." in n for n in changed)

    layer = moefied(moe_vit)["blocks.0.mlp"]
    rows = evaluate_topk(moe_vit, loader, [1, 4, EXPERTS])
    assert [r["setting"] for r in rows] == ["k=1", "k=4", f"k={EXPERTS}"]
    assert all(r["method"] == "moefication" and 0 <= r["accuracy"] <= 1 for r in rows)
    assert rows[0]["flops"] < rows[1]["flops"] < rows[2]["flops"]
    assert layer.k == EXPERTS

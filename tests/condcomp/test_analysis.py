"""Measurements behind the Chapter 2 miniature, checked against hand computations."""

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from thesis.condcomp.analysis import (
    best_saving_within,
    coefficient_of_variation,
    early_exit_curve,
    exit_flops,
    expert_load,
)
from thesis.condcomp.models import MoEMLP, multi_exit_mlp


@pytest.fixture
def loader():
    g = torch.Generator().manual_seed(0)
    return DataLoader(TensorDataset(torch.rand(40, 64, generator=g), torch.randint(0, 10, (40,), generator=g)),
                      batch_size=16)


def test_exit_flops_are_the_linear_macs_up_to_each_exit():
    model = multi_exit_mlp(64, [32, 16], 10)
    blocks, heads = [64 * 32, 32 * 16], [32 * 10, 16 * 10]
    assert exit_flops(model, torch.rand(3, 64)) == [blocks[0] + heads[0], sum(blocks) + sum(heads)]


def test_curve_compute_grows_with_threshold_and_static_rows_match_heads(loader):
    torch.manual_seed(0)
    model = multi_exit_mlp(64, [32, 32, 32], 10)
    rows = early_exit_curve(model, loader, [0.0, 0.2, 0.5, 2.0])
    dynamic = [r for r in rows if r["policy"] == "confidence"]
    fractions = [r["flops_fraction"] for r in dynamic]
    assert fractions == sorted(fractions)
    assert fractions[-1] == pytest.approx(1.0)  # threshold above 1: everyone reaches the last exit
    assert dynamic[0]["mean_exit"] == 0.0  # threshold 0: everyone leaves at the first exit
    static = [r for r in rows if r["policy"] == "static"]
    x, y = map(torch.cat, zip(*loader))
    for j, logits in enumerate(model(x)):
        assert static[j]["accuracy"] == pytest.approx(float((logits.argmax(-1) == y).float().mean()))
    assert dynamic[-1]["accuracy"] == pytest.approx(static[-1]["accuracy"])


def test_best_saving_picks_cheapest_setting_within_drop():
    rows = [{"policy": "confidence", "setting": "a", "accuracy": 0.90, "flops_fraction": 0.3},
            {"policy": "confidence", "setting": "b", "accuracy": 0.95, "flops_fraction": 0.5},
            {"policy": "static", "setting": "exit1", "accuracy": 0.955, "flops_fraction": 1.0}]
    assert best_saving_within(rows, 0.01)["setting"] == "b"
    assert best_saving_within(rows, 0.10)["setting"] == "a"


def test_expert_load_is_a_distribution_matching_routing(loader):
    torch.manual_seed(0)
    model = MoEMLP(64, 16, 8, num_experts=4, num_classes=10, k=1)
    load = expert_load(model, loader)
    assert load.sum() == pytest.approx(1.0)
    x = torch.cat([b[0] for b in loader])
    _, routing = model(x)
    assert torch.allclose(load, routing.load.float() / len(x))


def test_coefficient_of_variation():
    assert coefficient_of_variation(torch.full((4,), 0.25)) == 0.0
    assert coefficient_of_variation(torch.tensor([1.0, 0, 0, 0])) == pytest.approx(3 ** 0.5)

"""Layer sampling and schedules: exactly K distinct layers, budgets respected, static choices."""

import pytest
import torch

from thesis.alast.schedules import ALaSTSchedule, StaticSchedule, sample_layers
from thesis.alast.vit import ForwardRecord


def test_samplers_give_k_distinct_layers():
    budget = torch.tensor([1.0, 0.0, 0.5, 0.2, 0.9])
    for how in ("multinomial", "topk", "uniform"):
        for _ in range(20):
            chosen = sample_layers(budget, 3, how)
            assert len(set(chosen.tolist())) == 3 and all(0 <= i < 5 for i in chosen.tolist())
    assert sorted(sample_layers(budget, 2, "topk").tolist()) == [0, 4]


def test_multinomial_draws_follow_the_budgets():
    budget = torch.tensor([1.0, 0.1, 0.0])
    counts = torch.zeros(3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(400):
        counts[sample_layers(budget, 1, generator=generator)] += 1
    assert counts[0] > 5 * counts[1] and counts[2] == 0  # a zero budget is (almost) never drawn


def test_alast_plan_trains_k_layers_and_keeps_tokens_by_budget(vit, images):
    schedule = ALaSTSchedule(k=2, budget_lr=0.5, min_budget=0.3)
    schedule.setup(3)
    schedule.budgets.budget.copy_(torch.tensor([1.0, 0.1, 0.6]))
    plan = schedule.plan()
    assert sum(plan.trainable) == 2
    assert plan.keep == pytest.approx((1.0, 0.3, 0.6))  # the floor applies to token counts only
    schedule.observe(ForwardRecord(deltas=[torch.tensor(1.0)] * 3))
    assert schedule.budgets.budget.tolist() == pytest.approx([1.0, 0.1, 0.6])  # the first step only records


def test_k_can_count_frozen_layers_and_is_capped_by_depth():
    schedule = ALaSTSchedule(k=1, k_counts="frozen")
    schedule.setup(4)
    assert sum(schedule.plan().trainable) == 3
    capped = ALaSTSchedule(k=9)
    capped.setup(4)
    assert sum(capped.plan().trainable) == 4


def test_switching_off_both_axes_gives_full_fine_tuning():
    schedule = ALaSTSchedule(k=1, drop_tokens=False, select_layers=False)
    schedule.setup(3)
    schedule.budgets.budget.fill_(0.2)
    plan = schedule.plan()
    assert plan.trainable == (True, True, True) and plan.keep == (1.0, 1.0, 1.0)


def test_static_schedules(vit, images):
    for blocks, expected in (("all", [0, 1, 2]), ("none", []), ("last", [1, 2]), ([0], [0])):
        schedule = StaticSchedule(blocks=blocks, count=2, keep={1: 0.5})
        schedule.setup(3)
        schedule.bind(vit, images)
        plan = schedule.plan()
        assert [i for i, t in enumerate(plan.trainable) if t] == expected
        assert plan.keep == (1.0, 0.5, 1.0)
    ranked = StaticSchedule(blocks="relmag", count=2)
    ranked.setup(3)
    ranked.bind(vit, images)
    assert len(ranked.chosen) == 2

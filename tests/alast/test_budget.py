"""Eq. 3.18 budgets: the closed form, clipping, normalised deltas, and the token counts they allow."""

import math

import pytest
import torch

from thesis.alast.budget import LayerBudgets, kept_tokens


def test_budgets_follow_the_closed_form_drawdown_from_the_running_peak():
    """While no budget reaches 0: b_l^i = 1 - alpha * (max_{j<=i} Delta_l^j - Delta_l^i)."""
    alpha = 0.05
    deltas = torch.rand(30, 3, generator=torch.Generator().manual_seed(0)) * 2
    budgets = LayerBudgets(3, alpha)
    for i, delta in enumerate(deltas):
        got = budgets.update(delta).clone()
        peak = deltas[: i + 1].max(0).values
        torch.testing.assert_close(got, 1 - alpha * (peak - delta))


def test_first_step_only_records_and_budgets_stay_in_zero_one():
    budgets = LayerBudgets(2, budget_lr=1.0)
    assert budgets.update(torch.tensor([5.0, 0.0])).tolist() == [1.0, 1.0]
    assert budgets.update(torch.tensor([0.0, 9.0])).tolist() == [0.0, 1.0]  # -5 clipped at 0, +9 at 1
    assert budgets.update(torch.tensor([0.5, 8.0])).tolist() == [0.5, 0.0]


def test_initial_normalisation_makes_alpha_dimensionless():
    raw, scaled = LayerBudgets(1, 0.1, "initial"), LayerBudgets(1, 0.1, "initial")
    for d in (2.0, 1.0, 1.5):
        a = raw.update(torch.tensor([d]))
        b = scaled.update(torch.tensor([1000 * d]))
    torch.testing.assert_close(a, b)
    assert a.item() == pytest.approx(1 - 0.1 * 0.25)


def test_budgets_are_checkpointed_as_buffers():
    budgets = LayerBudgets(2, 0.5)
    budgets.update(torch.tensor([1.0, 1.0]))
    budgets.update(torch.tensor([0.5, 1.0]))
    restored = LayerBudgets(2, 0.5)
    restored.load_state_dict(budgets.state_dict())
    assert restored.budget.tolist() == [0.75, 1.0] and int(restored.observed) == 2


@pytest.mark.parametrize("fraction, current, original, reference, expected", [
    (1.0, 64, 64, "current", 64), (0.5, 64, 64, "current", 32), (0.7, 64, 64, "current", 45),
    (0.0, 64, 64, "current", 1), (0.5, 20, 64, "original", 20), (0.25, 20, 64, "original", 16),
])
def test_kept_tokens(fraction, current, original, reference, expected):
    assert kept_tokens(fraction, current, original, reference) == expected
    assert kept_tokens(fraction, current, original, reference) == max(1, min(current, math.ceil(
        fraction * (current if reference == "current" else original))))

"""ACM losses on hand-made inputs (spec ch2_acm D.a)."""

import math

import pytest
import torch

from thesis.acm.losses import (
    budget_loss,
    compute_fraction,
    dispersion_loss,
    distillation_loss,
    entropy_loss,
    gate_labels,
    gate_pretraining_loss,
)
from thesis.condcomp.gumbel import gumbel_softmax


def test_distillation_loss_is_mean_squared_error_over_prefixes():
    prefixes = torch.tensor([[[1.0, 0.0], [1.0, 1.0]]])  # one token, N = 2, d = 2
    target = torch.tensor([[1.0, 1.0]])
    assert distillation_loss(prefixes, target) == pytest.approx((1.0 + 0.0) / 2)


@pytest.mark.parametrize(
    ("distances", "min_choice", "offset", "label"),
    [
        ([10.0, 5.0, 2.0, 1.9, 1.8], 0, 0, 3),   # d(3)/d(2) = 0.95 >= 0.833: the 3rd learner stops helping
        ([10.0, 9.0, 2.0, 1.0, 0.5], 0, 0, 1),   # the 1st learner already helps too little
        ([10.0, 5.0, 2.5, 1.2, 0.5], 0, 0, 4),   # every learner helps: fallback N
        ([10.0, 9.0, 8.9, 1.0, 0.5], 1, 0, 2),   # min 1: search from n = 2 as printed (eq. 3.5)
        ([10.0, 5.0, 2.0, 1.9, 1.8], 0, -1, 2),  # prose reading: the count before that learner
        ([10.0, 9.0, 8.9, 1.0, 0.5], 1, -1, 1),  # prose reading at the minimum
    ],
)
def test_gate_labels(distances, min_choice, offset, label):
    assert gate_labels(torch.tensor([distances]), tau=1 / 1.2, min_choice=min_choice, label_offset=offset).item() == label


def test_gate_pretraining_loss_is_cross_entropy_on_shifted_labels():
    logits = torch.tensor([[0.0, 10.0, 0.0, 0.0]])
    assert gate_pretraining_loss(logits, torch.tensor([2]), min_choice=1) < 1e-3
    assert gate_pretraining_loss(logits, torch.tensor([1]), min_choice=1) > 5


def onehot(choices, num_choices):
    return torch.nn.functional.one_hot(torch.tensor(choices), num_choices).float()


def test_budget_loss_at_full_compute():
    full = [onehot([[4, 4, 4]], 5)]  # every token runs all N = 4 learners
    fraction = compute_fraction(full, [0], [10.0], [4])
    assert fraction.tolist() == [1.0]
    assert budget_loss(fraction, 0.25) == pytest.approx(0.75)


def test_compute_fraction_weights_acms_by_learner_cost():
    cheap, costly = onehot([[0, 0]], 5), onehot([[3, 3]], 4)  # 0 learners (min 0); 4 learners (min 1)
    fraction = compute_fraction([cheap, costly], [0, 1], [1.0, 3.0], [4, 4])
    assert fraction.item() == pytest.approx((0 + 2 * 4 * 3.0) / (2 * 4 * 1.0 + 2 * 4 * 3.0))


def test_entropy_loss_bounds():
    uniform = onehot([[0, 1, 2, 3, 4]], 5)
    single = onehot([[2, 2, 2, 2, 2]], 5)
    assert entropy_loss([uniform]).item() == pytest.approx(-1.0)
    assert entropy_loss([single]).item() == pytest.approx(0.0)
    assert entropy_loss([uniform, single]).item() == pytest.approx(-0.5)


def test_dispersion_loss_sign_and_zero():
    equal = torch.tensor([0.4, 0.4, 0.4])
    assert dispersion_loss(equal).item() == 0.0
    spread = torch.tensor([0.0, 1.0])
    assert dispersion_loss(spread).item() == pytest.approx(-0.5)
    assert dispersion_loss(spread, sign="printed", scale=2.0).item() == pytest.approx(1.0)


def test_aux_losses_reach_gate_logits_through_straight_through():
    torch.manual_seed(0)
    logits = torch.randn(2, 6, 5, requires_grad=True)
    hard = gumbel_softmax(logits, tau=0.8, hard=True)
    fraction = compute_fraction([hard], [0], [1.0], [4])
    loss = budget_loss(fraction, 0.1) + 0.05 * entropy_loss([hard]) + 0.05 * dispersion_loss(fraction)
    loss.backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    assert math.isfinite(loss.item())

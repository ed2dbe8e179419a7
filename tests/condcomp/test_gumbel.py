import pytest
import torch

from thesis.condcomp import gumbel_argmax, gumbel_softmax, gumbel_topk, sample_gumbel, topk_mask


def test_sample_gumbel_moments():
    g = sample_gumbel((200_000,), generator=torch.Generator().manual_seed(0))
    assert abs(g.mean().item() - 0.5772) < 0.01  # Euler-Mascheroni constant
    assert abs(g.var().item() - torch.pi**2 / 6) < 0.03


def test_gumbel_argmax_is_unbiased_sample_of_softmax():
    logits = torch.tensor([1.0, 0.0, -0.5, 2.0, 0.3])
    draws = 20_000
    idx = gumbel_argmax(logits.expand(draws, -1), generator=torch.Generator().manual_seed(1))
    freq = torch.bincount(idx, minlength=5).float() / draws
    assert torch.all((freq - logits.softmax(-1)).abs() < 0.02)


def test_gumbel_argmax_without_noise_is_greedy():
    logits = torch.randn(10, 6, generator=torch.Generator().manual_seed(0))
    assert torch.equal(gumbel_argmax(logits, noise=False), logits.argmax(-1))


def test_gumbel_softmax_soft_is_a_distribution_and_sharpens_with_tau():
    logits = torch.randn(4, 7, generator=torch.Generator().manual_seed(0))
    warm = gumbel_softmax(logits, tau=5.0, generator=torch.Generator().manual_seed(3))
    cold = gumbel_softmax(logits, tau=0.05, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(warm.sum(-1), torch.ones(4)) and torch.allclose(cold.sum(-1), torch.ones(4))
    assert torch.all(cold.max(-1).values > warm.max(-1).values)


def test_straight_through_forward_hard_backward_soft():
    logits = torch.randn(3, 5, generator=torch.Generator().manual_seed(0))
    weights = torch.randn(3, 5, generator=torch.Generator().manual_seed(1))
    hard_in = logits.clone().requires_grad_()
    soft_in = logits.clone().requires_grad_()
    hard = gumbel_softmax(hard_in, tau=0.7, hard=True, generator=torch.Generator().manual_seed(2))
    soft = gumbel_softmax(soft_in, tau=0.7, hard=False, generator=torch.Generator().manual_seed(2))
    assert torch.equal(hard.sum(-1), torch.ones(3))
    assert set(hard.detach().unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(hard.argmax(-1), soft.argmax(-1))  # same noise -> same sample (eq. 2.11)
    (weights * hard).sum().backward()
    (weights * soft).sum().backward()
    assert hard_in.grad.abs().sum() > 0
    assert torch.allclose(hard_in.grad, soft_in.grad)


@pytest.mark.parametrize("k", [1, 3, 5])
def test_gumbel_topk_exactly_k_ones_with_gradient(k):
    logits = torch.randn(8, 6, generator=torch.Generator().manual_seed(0), requires_grad=True)
    sample = gumbel_topk(logits, k, tau=0.5, generator=torch.Generator().manual_seed(1))
    assert torch.equal(sample.sum(-1), torch.full((8,), float(k)))
    assert set(sample.detach().unique().tolist()) <= {0.0, 1.0}
    (sample * torch.arange(6.0)).sum().backward()
    assert logits.grad.abs().sum() > 0


def test_gumbel_topk_first_element_frequencies_match_softmax():
    logits = torch.tensor([0.5, -1.0, 1.5, 0.0])
    draws = 20_000
    # With k = 1 the Gumbel-top-k sample is the Gumbel-max sample.
    sample = gumbel_topk(logits.expand(draws, -1), 1, generator=torch.Generator().manual_seed(4))
    freq = sample.mean(0)
    assert torch.all((freq - logits.softmax(-1)).abs() < 0.02)


def test_topk_mask_exact_count_and_positions():
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.7], [3.0, 2.0, 1.0, 0.0]])
    mask = topk_mask(scores, 2)
    assert torch.equal(mask, torch.tensor([[False, True, False, True], [True, True, False, False]]))

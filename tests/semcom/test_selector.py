"""Alg. 1 and eqs. 3.30-3.33: masks, budget token, penalties."""

import pytest
import torch

from tests.semcom.conftest import tiny_vit
from thesis.semcom.model import SemanticViT
from thesis.semcom.selector import BudgetToken, budget_penalty, kept_indicator, mean_mask, selection_losses


def test_budget_token_interpolates_low_and_high():
    token = BudgetToken(8)
    out = token(torch.tensor([0.0, 1.0, 0.25]))
    assert torch.allclose(out[0, 0], token.low) and torch.allclose(out[1, 0], token.high)
    assert torch.allclose(out[2, 0], 0.25 * token.high + 0.75 * token.low)


def test_masks_in_unit_interval_non_increasing_and_prefix_never_masked(semantic):
    semantic.train()
    images = torch.randn(6, 3, 16, 16)
    _, trace = semantic(images, torch.linspace(0.1, 1.0, 6), hard=False)
    assert len(trace.masks) == semantic.split - 1        # adaptive blocks 2..s, M^1 = 1
    previous = torch.ones_like(trace.masks[0])
    for mask in trace.masks:
        assert mask.min() >= 0 and mask.max() <= 1
        assert (mask <= previous + 1e-7).all()
        previous = mask
    semantic.eval()
    _, trace = semantic(images, 0.3)
    assert (trace.keep[:, 0] == 1).all() and (trace.keep[:, -1] == 1).all()   # class and budget tokens
    assert (trace.block_tokens[:, 0] == semantic.num_patches + 2).all()        # block 1 sees every token
    assert (trace.block_tokens[:, 1:].diff(dim=1) <= 0).all()


def test_initial_biases_drop_nothing_at_any_budget():
    model = SemanticViT(tiny_vit(), split=3).eval()
    for alpha in (0.05, 0.5, 1.0):
        _, trace = model(torch.randn(4, 3, 16, 16), alpha)
        assert (trace.kept_patches == model.num_patches).all()


def test_static_split_model_is_the_plain_vit():
    vit = tiny_vit().eval()
    model = SemanticViT(vit, split=2, adaptive=False).eval()
    images = torch.randn(3, 3, 16, 16)
    logits, _ = model(images)
    assert torch.allclose(logits, vit(images), atol=1e-5)


def test_budget_penalty_known_values():
    mask = torch.tensor([[1.0, 1.0, 0.0, 0.0]])          # patches; thesis mean counts the budget token too
    assert mean_mask(mask, "patches").item() == pytest.approx(0.5)
    assert mean_mask(mask, "thesis").item() == pytest.approx(3 / 5)
    alpha = torch.tensor([0.3])
    assert budget_penalty(mask, alpha, 0.01, "patches").item() == pytest.approx(0.19)
    assert budget_penalty(mask, torch.tensor([0.505]), 0.01, "patches").item() == 0.0


def test_selection_losses_follow_eqs_3_31_3_32():
    alpha = torch.tensor([0.2, 0.8])
    masks = [torch.full((2, 4), 0.9), torch.full((2, 4), 0.5)]     # s = 3: blocks 2 and 3 adaptive
    last, early = selection_losses(masks, alpha, 0.0, "patches")
    b = [budget_penalty(m, alpha, 0.0, "patches") for m in masks]
    assert last.item() == pytest.approx(b[1].item())
    assert early.item() == pytest.approx((b[0] + b[1]).item() / 3)


def test_hard_penalty_measures_kept_fraction_with_margin_gradient():
    margin = torch.tensor([[0.9, 0.02, 0.4, -0.3]], requires_grad=True)
    mask = torch.relu(margin)
    kept = kept_indicator(mask, delta=0.05, through=margin)
    assert kept.tolist() == [[1.0, 0.0, 1.0, 0.0]]
    kept.sum().backward()
    assert torch.equal(margin.grad, torch.ones_like(margin))      # the dropped token gets a gradient too

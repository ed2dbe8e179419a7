import pytest
import torch

from thesis.condcomp import (
    drop_matrix,
    merge_matrix,
    monotone_mask,
    select_within,
    token_drop,
    token_merge,
    topk_tokens,
)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def test_token_drop_gather_equals_one_hot_matrix_product():
    x = torch.randn(3, 10, 4)
    idx = topk_tokens(torch.randn(3, 10), 4)
    m = drop_matrix(idx, 10)
    assert m.shape == (3, 4, 10) and torch.all(m.sum(-1) == 1)
    assert torch.allclose(token_drop(x, idx), m @ x)
    assert torch.all(idx[:, 1:] > idx[:, :-1])  # original order kept


def test_topk_tokens_selects_highest_scores():
    scores = torch.tensor([[0.1, 0.9, 0.3, 0.8, 0.2]])
    assert topk_tokens(scores, 2).tolist() == [[1, 3]]


def test_merge_matrix_columns_sum_to_one_and_merge_sums_groups():
    x = torch.randn(2, 6, 3)
    assign = torch.tensor([[0, 1, 0, 2, 1, 0], [2, 2, 2, 1, 0, 1]])
    m = merge_matrix(assign, 3)
    assert m.shape == (2, 3, 6) and torch.all(m.sum(1) == 1)
    merged = token_merge(x, assign)
    assert torch.allclose(merged[0, 0], x[0, 0] + x[0, 2] + x[0, 5])
    assert torch.allclose(token_merge(x, assign, mean=True)[1, 2], x[1, :3].mean(0))


def test_token_merge_identity_assignment_returns_x():
    x = torch.randn(2, 7, 5)
    assert torch.equal(token_merge(x, torch.arange(7).expand(2, 7)), x)


def test_monotone_masks_only_shrink():
    n, b = 16, 4
    keep = torch.ones(b, n, dtype=torch.bool)
    for k in (12, 8, 5, 2):
        new = select_within(keep, torch.randn(b, n), k)
        assert torch.all(new.sum(-1) == k)
        assert torch.all(new <= keep)
        keep = new
    proposal = (torch.rand(b, n) > 0.5).float().requires_grad_()
    chained = monotone_mask(keep.float(), proposal)
    assert torch.all(chained <= keep.float()) and torch.all(chained <= proposal)
    chained.sum().backward()
    assert torch.equal(proposal.grad, keep.float())
    with pytest.raises(ValueError):
        select_within(keep, torch.randn(b, n), 3)

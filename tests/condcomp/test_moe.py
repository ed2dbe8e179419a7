import pytest
import torch
from torch import nn

from thesis.condcomp import MoE, expert_capacity, hash_experts


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _experts(n: int, d: int = 6) -> list[nn.Module]:
    return [nn.Sequential(nn.Linear(d, 12), nn.ReLU(), nn.Linear(12, d)) for _ in range(n)]


def _dense(moe: MoE, x: torch.Tensor) -> torch.Tensor:
    """Σ_i softmax(x W_g)_i f_i(x) computed without any routing code (eq. 2.18)."""
    probs = (x @ moe.expert_embeddings.weight.T).softmax(-1)
    return sum(probs[..., i : i + 1] * f(x) for i, f in enumerate(moe.experts))


@pytest.mark.parametrize("router", ["topk", "noisy_topk"])
def test_k_equal_n_is_dense_weighted_sum(router):
    moe = MoE(_experts(4), dim=6, router=router, k=4).eval()
    x = torch.randn(3, 5, 6)
    y, routing = moe(x)
    assert y.shape == x.shape
    assert torch.allclose(y, _dense(moe, x), atol=1e-5)
    assert torch.all(routing.experts_per_token == 4) and torch.all(routing.record.fraction == 1)


def test_expert_choice_full_capacity_is_dense():
    moe = MoE(_experts(3), dim=6, router="expert_choice", capacity_factor=3.0)
    x = torch.randn(10, 6)
    y, _ = moe(x)
    assert torch.allclose(y, _dense(moe, x), atol=1e-5)


@pytest.mark.parametrize("c", [0.5, 1.0, 2.0])
def test_expert_choice_exact_capacity_per_expert(c):
    moe = MoE(_experts(4), dim=6, router="expert_choice", capacity_factor=c)
    x = torch.randn(2, 16, 6)
    _, routing = moe(x)
    capacity = expert_capacity(32, 4, c)
    assert capacity == round(32 * c / 4)
    assert torch.all(routing.load == capacity)
    assert routing.experts_per_token.shape == (2, 16)


def test_topk_routing_picks_highest_probability_experts():
    moe = MoE(_experts(5), dim=6, router="topk", k=2)
    x = torch.randn(20, 6)
    y, routing = moe(x)
    probs = routing.probs
    top2 = probs.topk(2, -1).indices
    assert torch.all(routing.dispatch.sum(-1) == 2)
    assert torch.all(routing.dispatch.gather(1, top2))
    assert torch.allclose(routing.combine, probs * routing.dispatch)
    manual = torch.stack([sum(routing.combine[t, e] * moe.experts[e](x[t]) for e in top2[t]) for t in range(20)])
    assert torch.allclose(y, manual, atol=1e-5)
    assert routing.load.sum() == 40 and torch.allclose(routing.record.fraction, torch.full((20,), 0.4))


def test_noisy_topk_renormalises_over_kept_experts_and_is_noisy_in_training():
    moe = MoE(_experts(6), dim=6, router="noisy_topk", k=2)
    x = torch.randn(30, 6)
    _, r1 = moe.train()(x)
    _, r2 = moe(x)
    assert torch.allclose(r1.combine.sum(-1), torch.ones(30))
    assert torch.all(r1.dispatch.sum(-1) == 2)
    assert not torch.equal(r1.dispatch, r2.dispatch)
    _, e1 = moe.eval()(x)
    _, e2 = moe(x)
    assert torch.equal(e1.dispatch, e2.dispatch)


def test_random_router_assigns_k_distinct_experts_roughly_uniformly():
    moe = MoE(_experts(4), dim=6, router="random", k=2)
    _, routing = moe(torch.randn(4000, 6))
    assert routing.logits is None
    assert torch.all(routing.dispatch.sum(-1) == 2)
    assert torch.allclose(routing.combine.sum(-1), torch.ones(4000))
    assert torch.all((routing.load.float() / 4000 - 0.5).abs() < 0.03)


def test_hash_router_is_deterministic_per_token_id():
    moe = MoE(_experts(4), dim=6, router="hash")
    ids = torch.tensor([[3, 7, 3, 11], [7, 7, 0, 3]])
    _, routing = moe(torch.randn(2, 4, 6), token_ids=ids)
    expert = routing.dispatch.float().argmax(-1).reshape(2, 4)
    assert torch.equal(expert, hash_experts(ids, 4))
    assert expert[0, 0] == expert[0, 2] == expert[1, 3]
    _, a = moe(torch.ones(3, 6))
    assert torch.all(a.dispatch.sum(-1) == 1) and a.dispatch.float().argmax(-1).unique().numel() == 1


def test_drop_overflow_respects_capacity_and_zeroes_dropped_tokens():
    moe = MoE(_experts(4), dim=6, router="topk", k=1, capacity_factor=0.5, drop_overflow=True)
    x = torch.randn(40, 6)
    y, routing = moe(x)
    assert torch.all(routing.load <= 5)
    dropped = routing.experts_per_token == 0
    assert dropped.any()
    assert torch.all(y[dropped] == 0)


def test_moe_gradients_reach_router_and_used_experts():
    moe = MoE(_experts(3), dim=6, router="topk", k=1)
    y, routing = moe(torch.randn(16, 6))
    y.sum().backward()
    assert moe.expert_embeddings.weight.grad.abs().sum() > 0
    for e, used in enumerate(routing.load > 0):
        assert (moe.experts[e][0].weight.grad is not None) == bool(used)


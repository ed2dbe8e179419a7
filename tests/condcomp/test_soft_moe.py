import pytest
import torch
from torch import nn

from thesis.condcomp import SMEAR, SoftMoE


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _mlp(d: int = 6) -> nn.Module:
    return nn.Sequential(nn.Linear(d, 10), nn.GELU(), nn.Linear(10, d))


def test_soft_moe_weights_are_normalised():
    moe = SoftMoE([_mlp() for _ in range(3)], dim=6, slots_per_expert=2)
    dispatch, combine = moe.weights(torch.randn(4, 9, 6))
    assert dispatch.shape == combine.shape == (4, 9, 6)
    assert torch.allclose(dispatch.sum(1), torch.ones(4, 6))
    assert torch.allclose(combine.sum(-1), torch.ones(4, 9))


def test_soft_moe_matches_eqs_2_19_2_20():
    experts = [_mlp() for _ in range(2)]
    moe = SoftMoE(experts, dim=6)
    x = torch.randn(3, 7, 6)
    dispatch, combine = moe.weights(x)
    expected = torch.zeros_like(x)
    for i, f in enumerate(experts):
        slot = (dispatch[:, :, i : i + 1] * x).sum(1)  # eq. 2.19
        expected += combine[:, :, i : i + 1] * f(slot).unsqueeze(1)  # eq. 2.20
    assert torch.allclose(moe(x), expected, atol=1e-5)


def test_soft_moe_single_expert_is_plain_layer():
    f = _mlp()
    moe = SoftMoE([f], dim=6)
    single = torch.randn(4, 1, 6)
    assert torch.allclose(moe(single), f(single), atol=1e-6)
    repeated = torch.randn(4, 1, 6).expand(4, 5, 6)
    assert torch.allclose(moe(repeated), f(repeated), atol=1e-5)


def test_smear_single_expert_is_plain_layer():
    f = _mlp()
    x = torch.randn(5, 6)
    assert torch.allclose(SMEAR([f], dim=6)(x), f(x), atol=1e-6)


def test_smear_merges_weights_eq_2_21():
    experts = [nn.Linear(6, 4) for _ in range(3)]
    smear = SMEAR(experts, dim=6)
    x = torch.randn(5, 8, 6)
    gamma = smear.gates(x)
    assert torch.allclose(gamma.sum(-1), torch.ones(5))
    w = torch.einsum("bn,noi->boi", gamma, torch.stack([e.weight for e in experts]))
    b = gamma @ torch.stack([e.bias for e in experts])
    expected = torch.einsum("bti,boi->bto", x, w) + b.unsqueeze(1)
    y = smear(x)
    assert torch.allclose(y, expected, atol=1e-5)
    # For an affine expert, merging weights equals mixing outputs with the same γ.
    mixed = sum(gamma[:, i, None, None] * e(x) for i, e in enumerate(experts))
    assert torch.allclose(y, mixed, atol=1e-5)
    y.sum().backward()
    assert smear.router.weight.grad.abs().sum() > 0 and experts[2].weight.grad.abs().sum() > 0

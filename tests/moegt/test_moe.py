"""The MoE block: load-balancing loss (eqs. 5.11-5.13) and top-k routing (eq. 5.10)."""

import pytest
import torch

from thesis.moegt.moe import NoisyTopKMoE, load_balancing_loss


def test_load_loss_is_zero_for_a_uniform_router_and_larger_for_a_collapsed_one():
    torch.manual_seed(0)
    x = torch.randn(64, 8)
    moe = NoisyTopKMoE(8, num_experts=4, expert_hidden=4, k=2).eval()  # no noise: exact probabilities
    with torch.no_grad():
        moe.gate.weight.zero_()  # every expert gets the same logit
    uniform = moe.route(x).balance
    with torch.no_grad():
        moe.gate.weight[0] = 0.0
        moe.gate.weight[0, 0] = 50.0
        x[:, 0] = x[:, 0].abs() + 1.0  # expert 0 wins every node by a wide margin
        moe.gate.weight[1:] = 0.0
    collapsed = moe.route(x).balance
    assert uniform.item() == pytest.approx(0.0, abs=1e-6)
    assert collapsed.item() > uniform.item() + 0.1


def test_cv_squared_of_a_one_hot_load_is_experts_minus_one():
    assert load_balancing_loss(torch.tensor([8.0, 0.0, 0.0, 0.0])).item() == pytest.approx(3.0)
    assert load_balancing_loss(torch.full((6,), 2.0)).item() == pytest.approx(0.0)


@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("training", [True, False])
def test_each_node_goes_to_exactly_k_distinct_experts_with_gates_summing_to_one(k, training):
    torch.manual_seed(1)
    moe = NoisyTopKMoE(8, num_experts=6, expert_hidden=4, k=k).train(training)
    out, routing = moe(torch.randn(30, 8))
    assert out.shape == (30, 8)
    assert routing.experts.shape == (30, k)
    assert all(len(set(row.tolist())) == k for row in routing.experts)
    assert torch.allclose(routing.gates.sum(-1), torch.ones(30))


def test_output_is_the_gate_weighted_sum_of_the_selected_experts():
    torch.manual_seed(2)
    moe = NoisyTopKMoE(8, num_experts=4, expert_hidden=4, k=2).eval()
    x = torch.randn(5, 8)
    out, routing = moe(x)
    expected = torch.stack([sum(routing.gates[i, j] * moe.experts[int(routing.experts[i, j])](x[i])
                                for j in range(2)) for i in range(5)])
    assert torch.allclose(out, expected, atol=1e-6)


def test_experts_have_their_own_weights_unless_shared():
    assert NoisyTopKMoE(8, 4, 4, 2).experts[0] is not NoisyTopKMoE(8, 4, 4, 2).experts[1]
    shared = NoisyTopKMoE(8, 4, 4, 2, share_expert_weights=True)
    assert shared.experts[0] is shared.experts[3]


def test_k_must_leave_an_expert_out():
    with pytest.raises(ValueError, match="0 < k < num_experts"):
        NoisyTopKMoE(8, num_experts=2, k=2)

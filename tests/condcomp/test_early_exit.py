import pytest
import torch
import torch.nn.functional as F
from torch import nn

from thesis.condcomp import (
    DifferentiableBranching,
    MultiExit,
    branching_mixture,
    confidence_exit,
    multi_exit_loss,
    stick_breaking,
)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _net(b: int = 4, d: int = 6, c: int = 5) -> MultiExit:
    blocks = [nn.Sequential(nn.Linear(d, d), nn.ReLU()) for _ in range(b)]
    return MultiExit(blocks, [nn.Linear(d, c) for _ in range(b)])


def test_multi_exit_outputs_follow_eq_2_14():
    net = _net()
    x = torch.randn(7, 6)
    outs = net(x)
    assert len(outs) == 4 and all(o.shape == (7, 5) for o in outs)
    h = x
    for block, head, out in zip(net.blocks, net.heads, outs):
        h = block(h)
        assert torch.allclose(head(h), out)


def test_multi_exit_custom_placement():
    blocks = [nn.Linear(3, 3) for _ in range(5)]
    net = MultiExit(blocks, [nn.Linear(3, 2), nn.Linear(3, 2)], exits_after=[1, 4])
    assert len(net(torch.randn(2, 3))) == 2
    assert net.exit_costs == [0.4, 1.0]
    with pytest.raises(ValueError):
        MultiExit(blocks, [nn.Linear(3, 2)], exits_after=[2])


def test_multi_exit_loss_weights_and_reduction_to_ce():
    logits = [torch.randn(8, 5) for _ in range(3)]
    y = torch.randint(0, 5, (8,))
    assert torch.allclose(multi_exit_loss(logits, y, alpha=1.0, betas=[0.0, 0.0]), F.cross_entropy(logits[-1], y))
    expected = 0.5 * F.cross_entropy(logits[2], y) + 0.2 * F.cross_entropy(logits[0], y) + 0.3 * F.cross_entropy(logits[1], y)
    assert torch.allclose(multi_exit_loss(logits, y, alpha=0.5, betas=[0.2, 0.3]), expected)


def test_confidence_exit_threshold_limits():
    logits = [torch.randn(6, 4) for _ in range(3)]
    chosen, idx, rec = confidence_exit(logits, threshold=0.0)
    assert torch.all(idx == 0) and torch.equal(chosen, logits[0])
    assert torch.allclose(rec.fraction, torch.full((6,), 1 / 3))
    chosen, idx, rec = confidence_exit(logits, threshold=1.01)
    assert torch.all(idx == 2) and torch.equal(chosen, logits[2]) and torch.all(rec.fraction == 1)
    _, idx, _ = confidence_exit(logits, threshold=1e9, rule="entropy")
    assert torch.all(idx == 0)
    _, idx, _ = confidence_exit(logits, threshold=-1.0, rule="entropy")
    assert torch.all(idx == 2)


def test_confidence_exit_picks_first_confident_head():
    confident = torch.tensor([[10.0, 0.0]])
    unsure = torch.tensor([[0.0, 0.0]])
    logits = [torch.cat([unsure, confident]), torch.cat([confident, unsure]), torch.cat([unsure, unsure])]
    _, idx, _ = confidence_exit(logits, threshold=0.9)
    assert idx.tolist() == [1, 0]


@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.45, 1.5])
def test_multi_exit_infer_matches_confidence_exit(threshold):
    net = _net(b=4, d=6, c=3)
    x = torch.randn(32, 6) * 3
    ref_logits, ref_idx, ref_rec = confidence_exit(net(x), threshold, costs=net.exit_costs)
    logits, idx, rec = net.infer(x, threshold)
    assert torch.equal(idx, ref_idx)
    assert torch.allclose(logits, ref_logits, atol=1e-6)
    assert torch.allclose(rec.fraction, ref_rec.fraction)


def test_stick_breaking_sums_to_one_and_matches_eq_2_17():
    gates = torch.rand(10, 4)
    probs = stick_breaking(gates)
    assert probs.shape == (10, 5)
    assert torch.allclose(probs.sum(-1), torch.ones(10))
    assert torch.allclose(probs[:, 0], gates[:, 0])
    assert torch.allclose(probs[:, 2], (1 - gates[:, 0]) * (1 - gates[:, 1]) * gates[:, 2])
    assert torch.allclose(probs[:, -1], (1 - gates).prod(-1))


def test_branching_recursion_equals_stick_breaking_sum():
    outputs = [torch.randn(10, 3) for _ in range(5)]
    gates = torch.rand(10, 4)
    probs = stick_breaking(gates)
    expected = sum(probs[:, i : i + 1] * y for i, y in enumerate(outputs))
    assert torch.allclose(branching_mixture(outputs, gates), expected, atol=1e-6)


def test_branching_with_binary_gates_selects_first_open_exit():
    outputs = [torch.full((1, 2), float(i)) for i in range(4)]
    gates = torch.tensor([[0.0, 1.0, 1.0]])
    assert torch.equal(branching_mixture(outputs, gates), outputs[1])
    assert torch.equal(stick_breaking(gates), torch.tensor([[0.0, 1.0, 0.0, 0.0]]))


def _branching(b: int = 3, d: int = 5, c: int = 4) -> DifferentiableBranching:
    return DifferentiableBranching([nn.Linear(d, d) for _ in range(b)], [nn.Linear(d, c) for _ in range(b)],
                                   [nn.Linear(d, 1) for _ in range(b - 1)])


def test_differentiable_branching_module_outputs_distribution_and_trains():
    net = _branching()
    x = torch.randn(6, 5)
    mixture, exit_probs, logits = net(x)
    assert mixture.shape == (6, 4) and exit_probs.shape == (6, 3) and len(logits) == 3
    assert torch.allclose(mixture.sum(-1), torch.ones(6), atol=1e-6)
    assert torch.allclose(exit_probs.sum(-1), torch.ones(6), atol=1e-6)
    F.nll_loss(mixture.log(), torch.randint(0, 4, (6,))).backward()
    assert all(g.weight.grad.abs().sum() > 0 for g in net.gate_heads)


def test_differentiable_branching_inference_thresholds_gates_at_half():
    net = _branching()
    for g, bias in zip(net.gate_heads, [-50.0, 50.0]):  # gate 1 closed, gate 2 open
        nn.init.zeros_(g.weight)
        nn.init.constant_(g.bias, bias)
    x = torch.randn(4, 5)
    logits, idx, rec = net.infer(x)
    assert torch.all(idx == 1)
    assert torch.allclose(logits, net(x)[2][1])
    assert torch.allclose(rec.fraction, torch.full((4,), 2 / 3))

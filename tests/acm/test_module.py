"""ACM invariants (spec ch2_acm D.a): prefixes, gated execution, sizes, straight-through gates."""

import copy

import pytest
import torch

from thesis.acm.convert import acmize_vit, acms, learner_hidden, set_forced_learners
from thesis.acm.module import ACM
from thesis.core.flops import count_flops


@pytest.fixture
def acm():
    torch.manual_seed(0)
    return ACM(8, 6, num_learners=4, learner_hidden=5, min_choice=0)


def test_forward_all_prefixes_are_cumulative_sums(acm):
    z = torch.rand(2, 3, 8)
    prefixes = acm.forward_all(z)
    singles = torch.stack([learner(z) for learner in acm.learners], dim=-2)
    assert torch.allclose(prefixes, singles.cumsum(-2), atol=1e-6)


def test_residual_distillation_stops_earlier_gradients(acm):
    z = torch.rand(4, 8)
    acm.forward_all(z, distill_grad="residual")[:, 1].sum().backward()
    first, second = acm.learners[0][0].weight.grad, acm.learners[1][0].weight.grad
    assert not first.any() and second.abs().sum() > 0


@pytest.mark.parametrize("min_choice", [0, 1])
def test_gated_execution_equals_the_chosen_prefix(min_choice):
    torch.manual_seed(0)
    acm = ACM(8, 6, num_learners=4, learner_hidden=5, min_choice=min_choice).eval()
    z = torch.rand(3, 7, 8)
    k = torch.randint(min_choice, 5, (3, 7))
    out = acm.execute(z, k)
    prefixes = torch.cat([torch.zeros(3, 7, 1, 6), acm.forward_all(z)], dim=-2)
    expected = prefixes.gather(-2, k[..., None, None].expand(3, 7, 1, 6)).squeeze(-2)
    assert torch.allclose(out, expected, atol=1e-6)
    assert torch.equal(out[k == 0], torch.zeros_like(out[k == 0]))


def test_eval_forward_runs_the_gate_choice(acm):
    acm.eval()
    z = torch.rand(2, 5, 8)
    out = acm(z)
    assert torch.allclose(out, acm.execute(z, acm.last_choice.learners), atol=1e-6)
    assert acm.last_choice.learners.shape == (2, 5)


@pytest.mark.parametrize("gate_grad", ["straight_through", "aux_only"])
def test_training_forward_value_and_gate_gradient(gate_grad):
    torch.manual_seed(0)
    acm = ACM(8, 6, num_learners=4, learner_hidden=5, gate_grad=gate_grad).train()
    z = torch.rand(2, 5, 8)
    out = acm(z)
    with torch.no_grad():
        expected = acm.execute(z, acm.last_choice.learners)
    assert torch.allclose(out, expected, atol=1e-6)  # hard forward: exactly the chosen prefix
    out.square().sum().backward()
    gate_grad_norm = acm.gate[0].weight.grad
    if gate_grad == "straight_through":
        assert gate_grad_norm is not None and gate_grad_norm.abs().sum() > 0
    else:
        assert gate_grad_norm is None


def test_forced_learners_and_bounds(acm):
    acm.eval()
    z = torch.rand(2, 3, 8)
    acm.forced_learners = 2
    assert torch.allclose(acm(z), acm.forward_all(z)[..., 1, :], atol=1e-6)
    acm.forced_learners = 5
    with pytest.raises(ValueError, match="outside the choices 0..4"):
        acm(z)


def test_vit_b_sizes_match_the_replaced_modules():
    """ViT-B (d 768, d_ff 3072, N 4): MLP ACM 4,718,592 MACs/token, projection ACM 589,824."""
    timm = pytest.importorskip("timm")
    model = timm.create_model("vit_base_patch16_224", pretrained=False, depth=1)
    replaced = acmize_vit(model, num_learners=4)
    assert set(replaced) == {"blocks.0.mlp", "blocks.0.attn.proj"} | {f"blocks.0.attn.qkv.{n}" for n in "qkv"}
    mlp_original, mlp_acm = replaced["blocks.0.mlp"]
    proj_original, proj_acm = replaced["blocks.0.attn.proj"]
    assert mlp_acm.learner_macs * 4 == 4_718_592 and proj_acm.learner_macs * 4 == 589_824
    assert mlp_acm.learners[0][0].out_features == 768 and proj_acm.learners[0][0].out_features == 96
    learner_params = lambda acm: sum(p.numel() for p in acm.learners.parameters())  # noqa: E731
    params = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert learner_params(mlp_acm) == params(mlp_original) - 768  # all but fc2's output bias
    assert learner_params(proj_acm) == params(proj_original) - 768 + 4 * 96  # output bias out, hidden biases in
    assert (mlp_acm.min_choice, proj_acm.min_choice) == (0, 1)


def test_acmized_model_with_all_learners_costs_the_dense_model():
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    dense = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=2).eval()
    model = copy.deepcopy(dense)
    acmize_vit(model, num_learners=4)
    model.eval()
    set_forced_learners(model, 4)
    x = torch.rand(2, 3, 32, 32)
    assert count_flops(model, x).total == pytest.approx(count_flops(dense, x).total, rel=0.01)
    set_forced_learners(model, None)
    gated = count_flops(model, x).total
    gates = sum(a.gate.macs_per_token for a in acms(model).values()) * 2 * 17
    assert gated <= count_flops(dense, x).total * 1.01 + gates
    assert len(acms(model)) == 2 * 5


def test_learner_hidden_formula():
    assert learner_hidden(768 * 768 + 768, 768, 768, 4) == 96
    assert learner_hidden(16 * 16 + 16, 16, 16, 4) == 2

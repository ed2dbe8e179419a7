"""Eqs. 5.2-5.4 on an identity SAE, the ablation modes, and the hook only touching the prompt pass's
last position of the listed layers; a zero coefficient leaves the model's outputs unchanged."""

import pytest
import torch

from thesis.spare.hooks import Capture, edit
from thesis.spare.sae import SparseAutoencoder
from thesis.spare.steering import ActAddEdit, SpareEdit, TaskVecEdit


def identity_sae(d: int, bias: float = 0.0) -> SparseAutoencoder:
    sae = SparseAutoencoder(d, d, activation="relu")
    with torch.no_grad():
        sae.W_enc.copy_(torch.eye(d))
        sae.W_dec.copy_(torch.eye(d))
        sae.b_dec.fill_(bias)
    return sae


H = torch.tensor([[0.5, 2.0, 0.0, 1.0, 3.0, 0.2]])
Z_C = torch.tensor([1.0, 0.0, 0.0, 2.0, 0.0, 0.0])
Z_M = torch.tensor([0.0, 3.0, 1.5, 0.0, 0.0, 0.0])


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.5])
def test_outside_placement_is_eq_5_4(alpha):
    edited = SpareEdit(identity_sae(6), Z_C, Z_M, "memory", alpha, "outside", code="relu")(H)
    expected = H - alpha * torch.minimum(H, Z_C) + alpha * torch.clamp(Z_M - H, min=0)
    assert torch.allclose(edited, expected)


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.5])
def test_inside_placement_is_the_code_form(alpha):
    edited = SpareEdit(identity_sae(6), Z_C, Z_M, "memory", alpha, "inside", code="relu")(H)
    expected = H - torch.minimum(H, alpha * Z_C) + torch.clamp(alpha * Z_M - H, min=0)
    assert torch.allclose(edited, expected)


def test_steering_to_context_swaps_the_roles():
    edited = SpareEdit(identity_sae(6), Z_C, Z_M, "context", 1.0, "outside", code="relu")(H)
    assert torch.allclose(edited, H - torch.minimum(H, Z_M) + torch.clamp(Z_C - H, min=0))


def test_decoder_bias_cancels():
    b = 0.3
    sae = identity_sae(6, bias=b)
    z = torch.relu(H - b)  # Eq. 5.1 encodes h - b
    edited = SpareEdit(sae, Z_C, Z_M, "memory", 2.0, "outside", code="relu")(H)
    assert torch.allclose(edited, H - 2.0 * torch.minimum(z, Z_C) + 2.0 * torch.clamp(Z_M - z, min=0))


def test_ablation_modes():
    sae = identity_sae(6)
    remove_only = SpareEdit(sae, Z_C, Z_M, "memory", 1.0, "outside", "remove_only", "relu")(H)
    assert torch.allclose(remove_only, H - torch.minimum(H, Z_C))
    # remove_only reduces every selected context latent of the re-encoded state (spec C.2)
    after = sae.code(remove_only, "relu")[0]
    assert all(after[i] < sae.code(H, "relu")[0, i] or H[0, i] == 0 for i in (0, 3))
    add_only = SpareEdit(sae, Z_C, Z_M, "memory", 1.0, "outside", "add_only", "relu")(H)
    assert torch.allclose(add_only, H + torch.clamp(Z_M - H, min=0))
    independent = SpareEdit(sae, Z_C, Z_M, "memory", 1.0, "outside", "input_independent", "relu")(H)
    assert torch.allclose(independent, H - Z_C + Z_M)


def test_dense_baselines():
    mean_c, mean_m = torch.ones(6), torch.zeros(6)
    assert torch.allclose(ActAddEdit(mean_c, mean_m, "context", 2.0)(H), H + 2)
    assert torch.allclose(ActAddEdit(mean_c, mean_m, "memory", 2.0)(H), H - 2)
    assert torch.equal(TaskVecEdit(mean_c, mean_m, "memory")(H), torch.zeros_like(H))


def test_zero_coefficient_leaves_outputs_unchanged(tiny_lm):
    model, _ = tiny_lm
    ids = torch.randint(5, 40, (3, 9))
    sae = SparseAutoencoder(32, 64, activation="topk", k=4)
    with torch.no_grad():
        for p in sae.parameters():
            p.normal_()
    z = torch.rand(64)
    with torch.no_grad():
        reference = model(input_ids=ids).logits
        for placement in ("inside", "outside"):
            edits = {1: SpareEdit(sae, z, z.flip(0), "memory", 0.0, placement)}
            with edit(model, edits):
                assert torch.equal(model(input_ids=ids).logits, reference)


def test_edit_touches_only_last_position_of_listed_layers_on_the_prompt_pass(tiny_lm):
    model, _ = tiny_lm
    ids = torch.randint(5, 40, (2, 7))
    shift = lambda h: h + 5.0  # noqa: E731
    with torch.no_grad(), Capture(model, [0, 1, 2], last=False) as plain:
        model(input_ids=ids)
    with torch.no_grad(), edit(model, {1: shift}), Capture(model, [0, 1, 2], last=False) as steered:
        model(input_ids=ids)
    before, after = plain.result(), steered.result()
    assert torch.equal(before[("hidden", 0)], after[("hidden", 0)])
    assert torch.equal(before[("hidden", 1)][:, :-1], after[("hidden", 1)][:, :-1])
    assert torch.allclose(after[("hidden", 1)][:, -1], before[("hidden", 1)][:, -1] + 5.0)
    assert torch.equal(before[("hidden", 2)][:, :-1], after[("hidden", 2)][:, :-1])  # causal: earlier positions unchanged
    assert not torch.equal(before[("hidden", 2)][:, -1], after[("hidden", 2)][:, -1])
    calls = []
    with torch.no_grad(), edit(model, {1: lambda h: calls.append(h.shape) or h}):
        model(input_ids=ids[:, :1])  # a one-token decoding step is not edited
    assert calls == []


def test_capture_kinds_match_the_block_arithmetic(tiny_lm):
    """hidden_l = hidden_{l-1} + attn_l + mlp_l for a pre-norm Llama block (spec B.2)."""
    model, _ = tiny_lm
    ids = torch.randint(5, 40, (2, 6))
    with torch.no_grad(), Capture(model, [0, 1], ("hidden", "attn", "mlp")) as capture:
        model(input_ids=ids)
    acts = capture.result()
    assert torch.allclose(acts[("hidden", 1)], acts[("hidden", 0)] + acts[("attn", 1)] + acts[("mlp", 1)], atol=1e-5)

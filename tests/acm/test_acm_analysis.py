"""The spec B.8 analyses: per-token distillation errors (Fig. 3.6), compute histograms and choice
entropy (Fig. 3.9, claim R6)."""

import math

import copy

import pytest
import torch
from torch import nn

from thesis.acm.analysis import (
    choice_entropy,
    compute_histograms,
    distillation_error_rows,
    distillation_errors,
    image_compute,
    normalised_entropy,
    tokens_by_mean_error,
)
from thesis.acm.convert import acms
from thesis.acm.losses import distillation_loss
from thesis.acm.module import ACM
from thesis.acm.stages import TargetRecorder


def exact_acm(module: nn.Linear, num_learners: int) -> ACM:
    """An ACM whose first learner is `module` itself (W z + b, then the identity) and whose other
    learners output zero: every prefix h(z, n) equals the module's output."""
    d_in, d_out = module.in_features, module.out_features
    acm = ACM(d_in, d_out, num_learners, learner_hidden=d_out, learner_act="identity", min_choice=1)
    with torch.no_grad():
        first = acm.learners[0]
        first[0].weight.copy_(module.weight)
        first[0].bias.copy_(module.bias)
        first[2].weight.copy_(torch.eye(d_out))
        for learner in acm.learners[1:]:
            learner[2].weight.zero_()
    return acm


def batches(count: int, size: int, tokens: int, width: int):
    generator = torch.Generator().manual_seed(0)
    return [(torch.randn(size, tokens, width, generator=generator), torch.zeros(size)) for _ in range(count)]


def test_error_is_zero_when_the_learners_reproduce_the_module():
    torch.manual_seed(0)
    original = nn.Sequential(nn.Linear(6, 5), nn.GELU())
    converted = copy.deepcopy(original)
    converted[0] = exact_acm(original[0], num_learners=3)
    errors = distillation_errors(original, converted, batches(2, 4, 7, 6), ["0"], max_samples=8)
    assert set(errors) == {"0"}
    assert errors["0"].shape == (8, 7, 3)
    assert torch.allclose(errors["0"], torch.zeros(8, 7, 3), atol=1e-10)


def test_error_grows_when_a_learner_is_wrong_and_stops_at_max_samples():
    torch.manual_seed(0)
    original = nn.Sequential(nn.Linear(6, 5))
    converted = nn.Sequential(exact_acm(original[0], num_learners=3))
    with torch.no_grad():
        converted[0].learners[2][2].weight.fill_(1.0)  # learner 3 adds a non-zero term
    errors = distillation_errors(original, converted, batches(3, 4, 7, 6), ["*"], max_samples=6)["0"]
    assert errors.shape == (6, 7, 3)
    assert torch.allclose(errors[..., :2], torch.zeros(6, 7, 2), atol=1e-10)
    assert (errors[..., 2] > 0).all()


def test_vit_errors_have_one_entry_per_token_and_learner_count_and_match_eq_3_3(vit_pair):
    base, converted = vit_pair
    loader = [(torch.rand(3, 1, 16, 16), torch.zeros(3)), (torch.rand(3, 1, 16, 16), torch.zeros(3))]
    errors = distillation_errors(base, converted, loader, ["blocks.*.mlp", "blocks.1.attn.qkv.k"], max_samples=5)
    assert set(errors) == {"blocks.0.mlp", "blocks.1.mlp", "blocks.1.attn.qkv.k"}
    assert errors["blocks.0.mlp"].shape == (5, 17, 4)  # 16 patches + the class token, N = 4
    z, o = TargetRecorder(base, acms(converted))(torch.cat([x for x, _ in loader])[:5])["blocks.1.attn.qkv.k"]
    expected = distillation_loss(acms(converted)["blocks.1.attn.qkv.k"].forward_all(z), o)
    assert torch.allclose(errors["blocks.1.attn.qkv.k"].mean(), expected)


def test_unknown_module_pattern_names_the_paths(vit_pair):
    base, converted = vit_pair
    with pytest.raises(ValueError, match="blocks.0.mlp"):
        distillation_errors(base, converted, [(torch.rand(1, 1, 16, 16), None)], ["blocks.*.fc"], max_samples=1)


def test_tokens_are_ordered_by_mean_error():
    errors = torch.tensor([[[3.0, 3.0], [0.0, 2.0]],     # sample 0: token means 3, 1
                           [[1.0, 0.0], [4.0, 6.0]]])    # sample 1: token means 0.5, 5
    ordered = tokens_by_mean_error(errors)
    assert ordered.tolist() == [[1.0, 0.0], [0.0, 2.0], [3.0, 3.0], [4.0, 6.0]]


def test_error_rows_are_long_form_with_learner_counts_from_one():
    rows = distillation_error_rows({"m": torch.arange(12.0).reshape(2, 3, 2)})
    assert len(rows) == 12
    assert rows[0] == {"module": "m", "sample": 0, "token": 0, "learners": 1, "squared_error": 0.0}
    assert rows[-1] == {"module": "m", "sample": 1, "token": 2, "learners": 2, "squared_error": 11.0}
    assert rows[7] == {"module": "m", "sample": 1, "token": 0, "learners": 2, "squared_error": 7.0}


def test_compute_histograms_of_tokens_and_images():
    maps = torch.tensor([[0.0, 1.0], [0.5, 0.5], [0.25, 0.25]])
    assert image_compute(maps).tolist() == [0.5, 0.5, 0.25]
    rows = compute_histograms(maps, bins=2)
    tokens = [r["count"] for r in rows if r["level"] == "token"]
    images = [r["count"] for r in rows if r["level"] == "image"]
    assert tokens == [3, 3] and images == [1, 2]  # 1.0 falls in the last bin, 0.5 opens the second
    assert [(r["bin_low"], r["bin_high"]) for r in rows[:2]] == [(0.0, 0.5), (0.5, 1.0)]


def test_normalised_entropy_of_known_choice_distributions():
    choices = torch.tensor([[2, 2, 2, 2], [0, 1, 2, 3], [0, 0, 1, 1]])
    entropy = normalised_entropy(choices, num_choices=4)
    assert entropy.tolist() == pytest.approx([0.0, 1.0, math.log(2) / math.log(4)])


def test_choice_entropy_follows_the_gates_argmax():
    """A gate whose bias forces one choice gives entropy 0 for every image; a (linear) gate whose
    logits are (-x0, x0, 0, 0) picks choice 1 for tokens with a positive first feature and 0 for
    the others, so an image's entropy is that of its share of positive tokens."""
    acm = ACM(4, 4, num_learners=3, learner_hidden=4, min_choice=0, gate_style="code", gate_hidden=4)
    model = nn.Sequential(acm)
    first, middle, last = acm.gate
    with torch.no_grad():
        for layer in acm.gate:
            layer.weight.zero_()
            layer.bias.zero_()
        last.bias.copy_(torch.tensor([0.0, 0.0, 5.0, 0.0]))
    loader = batches(2, 3, 8, 4)
    assert choice_entropy(model, loader).tolist() == [0.0] * 6
    with torch.no_grad():
        last.bias.zero_()
        first.weight[0, 0] = 1.0
        middle.weight.copy_(torch.eye(4))
        last.weight[0, 0], last.weight[1, 0] = -1.0, 1.0
    shares = torch.cat([(x[..., 0] > 0).float().mean(-1) for x, _ in loader])
    expected = -(shares * shares.clamp_min(1e-12).log() + (1 - shares) * (1 - shares).clamp_min(1e-12).log())
    assert choice_entropy(model, loader) == pytest.approx(expected / math.log(4), abs=1e-6)

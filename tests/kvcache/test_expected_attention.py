"""Expected Attention (spec C.1, C.2, F.a test 3): the press's scores against a direct computation
from the model's weights, explicit rotation matrices and loops; the closed form (4.14) against
Monte Carlo; thesis and kvpress statistics agree on a bias-free model (spec E.8)."""

import math

import pytest
import torch
from transformers import DynamicCache
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from thesis.core.models import with_cache
from thesis.kvcache.expected_attention import ExpectedAttentionPress, averaged_rotation

T, SINKS, EPS = 32, 4, 0.02


def recorded_prefill(model, prompt):
    calls = []

    def record(module, args, kwargs, output):
        calls.append((module, kwargs["hidden_states"], dict(kwargs)))

    handles = [layer.self_attn.register_forward_hook(record, with_kwargs=True) for layer in model.model.layers]
    cache = DynamicCache(config=model.config)
    try:
        with torch.no_grad():
            model(input_ids=prompt, **with_cache(model, cache))
    finally:
        for handle in handles:
            handle.remove()
    return cache, calls


def rotation_matrix(model, position: int, head_dim: int) -> torch.Tensor:
    """R_p (head_dim, head_dim): column j = RoPE of the basis vector e_j at position p."""
    cos, sin = model.model.rotary_emb(torch.zeros(1), torch.tensor([[position]]))
    basis = torch.eye(head_dim)[None, None]  # rows e_j
    rotated, _ = apply_rotary_pos_emb(basis, basis, cos, sin)
    return rotated[0, 0].T.double()


def direct_scores(model, module, hidden, keys, values, n_future, n_sink, epsilon, sinks_in_softmax=True,
                  next_position=None):
    """Eqs. 4.12-4.16 written out: one query head and one key at a time, float64. The RoPE average
    starts at `next_position` (default: right after the n cached keys); without `sinks_in_softmax`
    the softmax runs over the keys after the sinks only."""
    d, groups = module.head_dim, module.num_key_value_groups
    n = keys.shape[-2]
    start = n if next_position is None else next_position
    x = hidden[0, n_sink:].double()
    mu = x.mean(0)
    sigma = (x - mu).T @ (x - mu) / x.shape[0]
    r_bar = sum(rotation_matrix(model, start + j, d) for j in range(n_future)) / n_future
    weight = module.q_proj.weight.double()
    scores = torch.zeros(keys.shape[1], n, dtype=torch.float64)
    for head in range(module.config.num_attention_heads):
        w_h = weight[head * d:(head + 1) * d]
        mean_q = r_bar @ w_h @ mu
        cov_q = r_bar @ w_h @ sigma @ w_h.T @ r_bar.T
        k = keys[0, head // groups].double()
        z = torch.stack([mean_q @ k[i] / math.sqrt(d) + k[i] @ cov_q @ k[i] / (2 * d) for i in range(n)])
        weights = z.softmax(0) if sinks_in_softmax else torch.cat([torch.zeros(n_sink, dtype=z.dtype),
                                                                   z[n_sink:].softmax(0)])
        scores[head // groups] += weights / groups
    scores = (scores + epsilon) * values[0].double().norm(dim=-1)
    scores[:, :n_sink] = scores[:, n_sink:].max() + 1
    return scores


def test_scores_match_direct_computation(tiny_llama, prompt):
    cache, calls = recorded_prefill(tiny_llama, prompt)
    press = ExpectedAttentionPress(0.5, n_future_positions=T, n_sink=SINKS, epsilon=EPS)
    press.attach(tiny_llama)
    for (module, hidden, kwargs), layer in zip(calls, cache.layers):
        with torch.no_grad():
            got = press.score(module, hidden, layer.keys, layer.values, None, kwargs)
            expected = direct_scores(tiny_llama, module, hidden, layer.keys, layer.values, T, SINKS, EPS)
        torch.testing.assert_close(got[0].double(), expected, rtol=1e-4, atol=1e-7)


def test_softmax_over_the_non_sink_keys_matches_direct_computation(tiny_llama, prompt):
    """kvpress's normalisation (sinks_in_softmax=False): eq. 4.15 summed over the keys after the sinks."""
    cache, calls = recorded_prefill(tiny_llama, prompt)
    press = ExpectedAttentionPress(0.5, n_future_positions=T, n_sink=SINKS, epsilon=EPS, sinks_in_softmax=False)
    press.attach(tiny_llama)
    module, hidden, kwargs = calls[1]
    layer = cache.layers[1]
    with torch.no_grad():
        got = press.score(module, hidden, layer.keys, layer.values, None, kwargs)
        default = ExpectedAttentionPress(0.5, n_future_positions=T, n_sink=SINKS, epsilon=EPS)
        default.attach(tiny_llama)
        thesis = default.score(module, hidden, layer.keys, layer.values, None, kwargs)
    expected = direct_scores(tiny_llama, module, hidden, layer.keys, layer.values, T, SINKS, EPS, sinks_in_softmax=False)
    torch.testing.assert_close(got[0].double(), expected, rtol=1e-4, atol=1e-7)
    assert float((got - thesis).abs().max()) > 1e-5


def test_rope_start_absolute_or_buffer_length(tiny_llama, prompt):
    """The RoPE average starts at the absolute next position (position_ids, default) or, as kvpress,
    at the length of the scored hidden states; shifted positions tell the two apart."""
    cache, calls = recorded_prefill(tiny_llama, prompt)
    module, hidden, kwargs = calls[1]
    layer = cache.layers[1]
    shifted = {**kwargs, "position_ids": kwargs["position_ids"] + 100}
    n = hidden.shape[1]
    for rope_start, start in (("absolute", n + 100), ("buffer_length", n)):
        press = ExpectedAttentionPress(0.5, n_future_positions=T, n_sink=SINKS, epsilon=EPS, rope_start=rope_start)
        press.attach(tiny_llama)
        with torch.no_grad():
            got = press.score(module, hidden, layer.keys, layer.values, None, shifted)
        expected = direct_scores(tiny_llama, module, hidden, layer.keys, layer.values, T, SINKS, EPS,
                                 next_position=start)
        torch.testing.assert_close(got[0].double(), expected, rtol=1e-4, atol=1e-7)


def test_kvpress_statistics_equal_thesis_statistics_without_bias_or_q_norm(tiny_llama, prompt):
    cache, calls = recorded_prefill(tiny_llama, prompt)
    thesis, kvpress = ExpectedAttentionPress(0.5), ExpectedAttentionPress(0.5, statistics="queries")
    thesis.attach(tiny_llama)
    kvpress.attach(tiny_llama)
    module, hidden, kwargs = calls[1]
    with torch.no_grad():
        args = (module, hidden, cache.layers[1].keys, cache.layers[1].values, None, kwargs)
        torch.testing.assert_close(thesis.score(*args), kvpress.score(*args), rtol=1e-4, atol=1e-6)


def test_averaged_rotation_is_the_mean_of_explicit_rotations(tiny_llama):
    got = averaged_rotation(tiny_llama.model.rotary_emb, 100, 8, 16, torch.device("cpu"))
    expected = sum(rotation_matrix(tiny_llama, 100 + j, 16) for j in range(8)) / 8
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-6)


def test_gaussian_closed_form_matches_monte_carlo():
    generator = torch.Generator().manual_seed(0)
    d = 16
    mean = 0.5 * torch.randn(d, generator=generator, dtype=torch.float64)
    factor = 0.3 * torch.randn(d, d, generator=generator, dtype=torch.float64)
    covariance = factor @ factor.T
    key = torch.randn(d, generator=generator, dtype=torch.float64)
    closed_form = math.exp(mean @ key / math.sqrt(d) + key @ covariance @ key / (2 * d))
    noise = torch.randn(200_000, d, generator=generator, dtype=torch.float64)
    samples = mean + noise @ torch.linalg.cholesky(covariance + 1e-12 * torch.eye(d, dtype=torch.float64)).T
    assert (samples @ key / math.sqrt(d)).exp().mean().item() == pytest.approx(closed_form, rel=0.01)


def test_invalid_variants_are_refused():
    with pytest.raises(ValueError, match="statistics"):
        ExpectedAttentionPress(0.5, statistics="pre_rope")
    with pytest.raises(ValueError, match="value_norm"):
        ExpectedAttentionPress(0.5, value_norm="l1")
    with pytest.raises(ValueError, match="rope_start"):
        ExpectedAttentionPress(0.5, rope_start="relative")

"""Activation statistics (thesis Figs. 4.41, 4.47-4.49): streamed moments equal scipy's skewness and
excess kurtosis of the pooled data, and the runner's pre-RoPE queries are W_Q h."""

import numpy as np
import torch
from scipy import stats

from thesis.kvcache.analysis.activation_stats import collect, moments_from_sums, power_sums
from thesis.kvcache.analysis.capture import forward_layers


def test_streamed_moments_match_scipy():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(500, 6, generator=generator).exp()  # skewed, heavy-tailed
    sums = power_sums(x[:200]) + power_sums(x[200:])
    found = moments_from_sums(500, sums)
    data = x.double().numpy()
    assert np.allclose(found["mean"].numpy(), data.mean(0))
    assert np.allclose(found["std"].numpy(), data.std(0))
    assert np.allclose(found["skew"].numpy(), stats.skew(data, axis=0), rtol=1e-6)
    assert np.allclose(found["excess_kurtosis"].numpy(), stats.kurtosis(data, axis=0, fisher=True), rtol=1e-6)


def test_collected_sums_cover_every_token_after_the_sinks(tiny_llama, prompt):
    chunks = torch.stack([prompt[0, :20], prompt[0, 20:40]])
    count, hidden_sums, query_sums, first = collect(tiny_llama, chunks, skip_first=4)
    assert count == 2 * 16
    hidden, queries = first[1]
    module = tiny_llama.model.layers[1].self_attn
    assert torch.allclose(queries, module.q_proj(hidden).view(16, 4, 16), atol=1e-5)
    states = torch.cat([forward_layers(tiny_llama, chunk[None])[1].hidden_states[0, 4:] for chunk in chunks]).double()
    assert torch.allclose(hidden_sums[1][0], states.sum(0), atol=1e-4)
    assert torch.allclose(hidden_sums[1][1], states.pow(2).sum(0), atol=1e-4)
    assert query_sums[1].shape == (4, 4, 16)

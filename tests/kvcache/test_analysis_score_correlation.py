"""Score correlation (thesis Fig. 4.50): Pearson and Spearman against scipy, observed future attention
against eager attention weights, and a press's correlation against one computed with numpy and scipy."""

import numpy as np
import pytest
import torch
from scipy import stats

from thesis.kvcache.analysis.capture import forward_layers
from thesis.kvcache.analysis.score_correlation import correlations, observed_attention, pearson
from thesis.kvcache.expected_attention import ExpectedAttentionPress
from thesis.kvcache.knorm import KNormPress
from thesis.kvcache.mini.correlation import spearman


def test_pearson_and_spearman_match_scipy():
    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(5, 40, generator=generator), torch.randn(5, 40, generator=generator)
    y = y + x
    for row in range(5):
        assert pearson(x, y)[row].item() == pytest.approx(stats.pearsonr(x[row].double(), y[row].double())[0], abs=1e-9)
        assert spearman(x, y)[row].item() == pytest.approx(stats.spearmanr(x[row].double(), y[row].double())[0], abs=1e-9)


def test_observed_attention_is_the_future_rows_mean(tiny_llama, tiny_llama_eager, prompt):
    ids = prompt[:, :30]
    with torch.no_grad():
        eager = tiny_llama_eager(input_ids=ids, output_attentions=True).attentions
    for layer, weights in zip(forward_layers(tiny_llama, ids), eager):
        expected = weights[0, :, 12:, :12].double().numpy().mean(axis=1)
        assert np.allclose(observed_attention(layer, 12)[0].numpy(), expected, atol=1e-6)


def test_knorm_correlation_matches_scipy(tiny_llama, prompt):
    chunks = prompt[:, :30]
    reference = ExpectedAttentionPress(n_future_positions=8)
    reference.attach(tiny_llama)
    ea, per_press, (observed, expected) = correlations(tiny_llama, chunks, 12, reference, {"knorm": KNormPress()})
    layer = forward_layers(tiny_llama, chunks)[1]
    future = observed_attention(layer, 12)[0].numpy()  # (heads, 12)
    target = future[2:4].mean(0)  # KV head 1 = query heads 2, 3
    norms = layer.keys[0, 1, :12].double().norm(dim=-1).numpy()
    # the press scores in float32, the reference in float64
    assert per_press["knorm"][1, 1, 1].item() == pytest.approx(stats.spearmanr(-norms, target)[0], abs=1e-9)
    assert per_press["knorm"][1, 1, 0].item() == pytest.approx(stats.pearsonr(-norms, target)[0], abs=1e-6)
    assert np.allclose(observed[1].numpy(), future)
    assert torch.allclose(expected.sum(-1), torch.ones(2, 4, dtype=expected.dtype))
    assert ea[1, 2, 0].item() == pytest.approx(stats.pearsonr(expected[1, 2].numpy(), future[2])[0], abs=1e-9)

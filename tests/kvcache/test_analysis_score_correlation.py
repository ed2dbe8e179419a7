"""Score correlation (thesis Fig. 4.50): Pearson and Spearman against scipy, observed future attention
against eager attention weights, expected attention against eqs. 4.12-4.15 written out (sinks left out
of the statistics), and the correlations against ones computed with numpy and scipy."""

import math

import numpy as np
import pytest
import torch
from scipy import stats
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

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


def rotation_matrix(model, position: int, head_dim: int) -> torch.Tensor:
    """R_p (head_dim, head_dim): column j = RoPE of the basis vector e_j at position p, float64."""
    cos, sin = model.model.rotary_emb(torch.zeros(1), torch.tensor([[position]]))
    basis = torch.eye(head_dim)[None, None]
    rotated, _ = apply_rotary_pos_emb(basis, basis, cos, sin)
    return rotated[0, 0].T.double()


def direct_expected_attention(model, module, hidden, keys, context: int, n_future: int, n_sink: int) -> np.ndarray:
    """Eqs. 4.12-4.15 per query head and key, float64: (heads, context); statistics from the hidden
    states n_sink .. context - 1, RoPE averaged over positions context .. context + n_future - 1."""
    d, groups = module.head_dim, module.num_key_value_groups
    x = hidden[0, n_sink:context].double()
    mu = x.mean(0)
    sigma = (x - mu).T @ (x - mu) / x.shape[0]
    r_bar = sum(rotation_matrix(model, context + j, d) for j in range(n_future)) / n_future
    weight = module.q_proj.weight.detach().double()
    rows = []
    for head in range(module.config.num_attention_heads):
        w_h = weight[head * d:(head + 1) * d]
        mean_q, cov_q = r_bar @ w_h @ mu, r_bar @ w_h @ sigma @ w_h.T @ r_bar.T
        k = keys[0, head // groups, :context].double()
        z = torch.stack([mean_q @ k[i] / math.sqrt(d) + k[i] @ cov_q @ k[i] / (2 * d) for i in range(context)])
        rows.append(z.softmax(0).numpy())
    return np.stack(rows)


def test_correlations_against_eager_weights_and_direct_expected_attention(tiny_llama, tiny_llama_eager, prompt):
    chunks, context = prompt[:, :30], 12
    reference = ExpectedAttentionPress(n_future_positions=8, n_sink=4)
    reference.attach(tiny_llama)
    ea, per_press, (observed, expected) = correlations(tiny_llama, chunks, context, reference, {"knorm": KNormPress()})
    with torch.no_grad():
        eager = tiny_llama_eager(input_ids=chunks, output_attentions=True).attentions
    for index, layer in enumerate(forward_layers(tiny_llama, chunks)):
        future = eager[index][0, :, context:, :context].double().numpy().mean(axis=1)  # (heads, context)
        direct = direct_expected_attention(tiny_llama, layer.module, layer.hidden_states, layer.keys, context, 8, 4)
        assert np.allclose(observed[index].numpy(), future, atol=1e-6)
        assert np.allclose(expected[index].numpy(), direct, rtol=1e-4, atol=1e-7)
        for head in range(4):
            assert ea[index, head, 0].item() == pytest.approx(stats.pearsonr(direct[head], future[head])[0], abs=1e-4)
            assert ea[index, head, 1].item() == pytest.approx(stats.spearmanr(direct[head], future[head])[0], abs=1e-9)
        norms = layer.keys[0, 1, :context].double().norm(dim=-1).numpy()
        target = future[2:4].mean(0)  # KV head 1 = query heads 2, 3
        # the press scores in float32, the reference in float64
        assert per_press["knorm"][index, 1, 1].item() == pytest.approx(stats.spearmanr(-norms, target)[0], abs=1e-9)
        assert per_press["knorm"][index, 1, 0].item() == pytest.approx(stats.pearsonr(-norms, target)[0], abs=1e-5)

"""ALR and attention-loss curves (thesis eqs. 4.5-4.7): a hand-computed case, ideal <= L2 at every
ratio, zero at ratio 0, monotone, total attention at ratio 1; the runner's attention rows equal eager
attention of the tiny Llama, and its ALR equals the area between its own loss curves."""

import torch

from thesis.kvcache.analysis.alr import attention_loss_analysis, eviction_losses, ideal_order, l2_order, losses_at_ratios
from thesis.kvcache.analysis.capture import forward_layers
from thesis.kvcache.mini.correlation import attention_loss_ratio


def test_alr_matches_a_hand_computation():
    attention = torch.tensor([0.5, 0.1, 0.3, 0.1])
    keys = torch.tensor([[1.0, 0.0], [0.0, 3.0], [2.0, 0.0], [0.0, 0.5]])[None, None]  # norms 1, 3, 2, 0.5
    order = l2_order(keys, groups=1)[0, 0]
    assert order.tolist() == [1, 2, 0, 3]  # highest norm evicted first
    # L2 losses m=1..4: 0.1, 0.4, 0.9, 1.0; ideal: 0.1, 0.2, 0.5, 1.0; y^m = 0, 0.2, 0.4, 0 -> ALR 0.6
    assert torch.allclose(eviction_losses(attention, order), torch.tensor([0.0, 0.1, 0.4, 0.9, 1.0]))
    assert torch.allclose(eviction_losses(attention, ideal_order(attention)), torch.tensor([0.0, 0.1, 0.2, 0.5, 1.0]))
    assert torch.isclose(attention_loss_ratio(attention, order), torch.tensor(0.6))


def test_ideal_loss_is_a_lower_bound_starting_at_zero_and_monotone():
    generator = torch.Generator().manual_seed(0)
    attention = torch.rand(3, 4, 50, generator=generator).softmax(-1)
    keys = torch.randn(3, 2, 50, 8, generator=generator)
    ratios = [i / 10 for i in range(11)]
    ideal = losses_at_ratios(eviction_losses(attention, ideal_order(attention)), ratios)
    l2 = losses_at_ratios(eviction_losses(attention, l2_order(keys, groups=2)), ratios)
    assert (ideal <= l2 + 1e-6).all()
    for curve in (ideal, l2):
        assert (curve[..., 0] == 0).all()
        assert (curve.diff(dim=-1) >= -1e-7).all()
        assert torch.allclose(curve[..., -1], attention.sum(-1))


def test_l2_order_repeats_each_kv_head_over_its_query_heads():
    keys = torch.randn(1, 2, 6, 4)
    order = l2_order(keys, groups=2)
    assert order.shape == (1, 4, 6)
    assert torch.equal(order[:, 0], order[:, 1]) and torch.equal(order[:, 2], order[:, 3])
    assert torch.equal(order[0, 2], keys[0, 1].norm(dim=-1).argsort(descending=True))


def test_attention_rows_equal_eager_attention(tiny_llama, tiny_llama_eager, prompt):
    ids = prompt[:, :40]
    with torch.no_grad():
        eager = tiny_llama_eager(input_ids=ids, output_attentions=True).attentions
    for layer, reference in zip(forward_layers(tiny_llama, ids), eager):
        assert torch.allclose(layer.attention(), reference, atol=1e-5)
        assert torch.allclose(layer.attention(window=1)[:, :, 0], reference[:, :, -1], atol=1e-5)


def test_runner_alr_is_the_area_between_its_loss_curves(tiny_llama, prompt):
    chunks = prompt[:, :33].repeat(2, 1)
    chunks[1] = prompt[0, 40:73]
    n = chunks.shape[1] - 1
    found = attention_loss_analysis(tiny_llama, chunks, [m / n for m in range(n + 1)])
    assert found["alr"].shape == (2, 4) and (found["alr"] >= 0).all()
    assert torch.allclose(found["alr"], (found["l2"] - found["ideal"]).sum(-1), atol=1e-9)
    assert (found["ideal"] <= found["l2"] + 1e-9).all()

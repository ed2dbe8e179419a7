"""PyramidKV: per-layer budgets against a hand computation, the total against the requested ratio, and each
layer's kept pairs against SnapKV run at that layer's own ratio."""

import pytest
import torch
from transformers import DynamicCache

from thesis.core.models import with_cache
from thesis.kvcache.baselines import SnapKVPress
from thesis.kvcache.press import cache_entries
from thesis.kvcache.pyramidkv import PyramidKVPress


def budgets(press: PyramidKVPress, n: int, layers: int) -> list[int]:
    return [press.layer_budget(n, layer, layers) for layer in range(layers)]


def test_budgets_by_hand():
    # n = 1000, r = 0.5: B = 500, b_min = 500 / 20 = 25, b_max = 1000 - 25 = 975 (< n - w = 996);
    # step (975 - 25) / 3 = 316.67: 975, 658.33, 341.67, 25
    assert budgets(PyramidKVPress(compression_ratio=0.5, window=4, beta=20), 1000, 4) == [975, 658, 342, 25]
    # n = 100, r = 0.25: B = 75, b_max = 150 - 3.75 >= 96 = n - w, so b_max = 96, b_min = 150 - 96 = 54; step 14
    assert budgets(PyramidKVPress(compression_ratio=0.25, window=4, beta=20), 100, 4) == [96, 82, 68, 54]


def test_budgets_fall_back_to_uniform_when_the_pyramid_does_not_fit():
    # n = 128, r = 0.5, beta 20: b_min = 3.2 < window 64
    press = PyramidKVPress(compression_ratio=0.5, window=64, beta=20)
    assert budgets(press, 128, 4) == [64] * 4
    assert budgets(PyramidKVPress(compression_ratio=0.3, window=2, beta=2), 128, 1) == [89]  # floor(89.6)


@pytest.mark.parametrize("ratio", [0.1, 0.25, 0.5, 0.75])
def test_total_budget_is_the_uniform_one(ratio):
    press = PyramidKVPress(compression_ratio=ratio, window=16, beta=20)
    n, layers = 4096, 32
    total = sum(budgets(press, n, layers))
    assert abs(total - layers * n * (1 - ratio)) <= layers / 2
    assert budgets(press, n, layers) == sorted(budgets(press, n, layers), reverse=True)


def test_beta_is_validated():
    with pytest.raises(ValueError, match="beta"):
        PyramidKVPress(compression_ratio=0.5, beta=0.5)


def compressed_cache(model, prompt, press) -> DynamicCache:
    cache = DynamicCache(config=model.config)
    with torch.no_grad(), press(model):
        model(input_ids=prompt, **with_cache(model, cache))
    return cache


def test_model_keeps_the_pyramid_and_snapkv_choices(tiny_llama_4_layers, prompt):
    # n = 128, r = 0.5, window 2, beta 4: B = 64, b_min = 16, b_max = 112; step 32
    press = PyramidKVPress(compression_ratio=0.5, window=2, kernel=3, beta=4)
    cache = compressed_cache(tiny_llama_4_layers, prompt, press)
    lengths = [layer.keys.shape[-2] for layer in cache.layers]
    assert lengths == [112, 80, 48, 16]
    heads = tiny_llama_4_layers.config.num_key_value_heads
    assert cache_entries(cache) == 4 * heads * 64  # achieved ratio exactly 0.5
    for layer, kept in enumerate(lengths):
        snap = compressed_cache(tiny_llama_4_layers, prompt,
                                SnapKVPress(compression_ratio=1 - kept / prompt.shape[1], window=2, kernel=3))
        assert torch.equal(snap.layers[layer].keys, cache.layers[layer].keys)
        assert torch.equal(snap.layers[layer].values, cache.layers[layer].values)


def test_ratio_zero_is_the_identity(tiny_llama_4_layers, prompt):
    cache = compressed_cache(tiny_llama_4_layers, prompt, PyramidKVPress(compression_ratio=0.0, window=2, beta=4))
    assert [layer.keys.shape[-2] for layer in cache.layers] == [prompt.shape[1]] * 4

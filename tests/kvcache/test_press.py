"""The press layer (spec F.a tests 1, 2, 6, 7): exact top-k per KV head in positional order, kept
counts and achieved ratios (single, skipped layers, composed, AdaKV), identity at ratio 0, and
absolute positions after eviction."""

import math

import pytest
import torch
from transformers import DynamicCache

from thesis.core.models import with_cache
from thesis.kvcache.adakv import AdaKVPress, headwise_keep
from thesis.kvcache.baselines import (
    KeyDiffPress,
    ObservedAttentionPress,
    RandomPress,
    SnapKVPress,
    StreamingLLMPress,
    TOVAPress,
)
from thesis.kvcache.composed import ComposedPress
from thesis.kvcache.expected_attention import ExpectedAttentionPress
from thesis.kvcache.headwise_cache import HeadwiseLayer
from thesis.kvcache.knorm import KNormPress
from thesis.kvcache.press import cache_entries, gather_positions, n_kept
from thesis.kvcache.qfilters import QFiltersPress

LAYERS, KV_HEADS, HEAD_DIM = 2, 2, 16


def scoring_presses(ratio: float) -> list:
    filters = torch.randn(LAYERS, KV_HEADS, HEAD_DIM, generator=torch.Generator().manual_seed(0))
    return [KNormPress(ratio, skip_layers=()), RandomPress(ratio, seed=0), StreamingLLMPress(ratio),
            SnapKVPress(ratio, window=8), TOVAPress(ratio), ObservedAttentionPress(ratio),
            ExpectedAttentionPress(ratio), ExpectedAttentionPress(ratio, statistics="queries", value_norm="wo_v"),
            QFiltersPress(ratio, filters=filters), KeyDiffPress(ratio)]


def prefill(model, prompt, press=None) -> DynamicCache:
    cache = DynamicCache(config=model.config)
    with torch.no_grad():
        if press is None:
            model(input_ids=prompt, **with_cache(model, cache))
        else:
            with press(model):
                model(input_ids=prompt, **with_cache(model, cache))
    return cache


def recorded_attention_calls(model, prompt) -> tuple[DynamicCache, list]:
    """Uncompressed prefill cache and, per layer, what the press hook would receive."""
    calls = []

    def record(module, args, kwargs, output):
        calls.append((module, kwargs["hidden_states"], output[1], dict(kwargs)))

    handles = [layer.self_attn.register_forward_hook(record, with_kwargs=True) for layer in model.model.layers]
    try:
        cache = prefill(model, prompt)
    finally:
        for handle in handles:
            handle.remove()
    return cache, calls


@pytest.mark.parametrize("press", scoring_presses(0.6), ids=lambda p: type(p).__name__)
def test_kept_pairs_are_the_top_k_scores_of_each_head_in_positional_order(press, tiny_llama, prompt):
    full, calls = recorded_attention_calls(tiny_llama, prompt)
    press.attach(tiny_llama)
    with torch.no_grad():
        expected = [press.score(module, hidden, full.layers[i].keys, full.layers[i].values, attentions, kwargs)
                    for i, (module, hidden, attentions, kwargs) in enumerate(calls)]
    compressed = prefill(tiny_llama, prompt, press)
    k = press.n_kept(prompt.shape[1])
    for layer, full_layer, scores in zip(compressed.layers, full.layers, expected):
        top = scores.topk(k, dim=-1).indices.sort(dim=-1).values
        assert torch.equal(layer.keys, gather_positions(full_layer.keys, top))
        assert torch.equal(layer.values, gather_positions(full_layer.values, top))
        kept_scores = scores.gather(-1, top)
        evicted = scores.scatter(-1, top, float("-inf"))
        assert (kept_scores.min(-1).values[..., None] >= evicted).all()


def test_knorm_keeps_lowest_norm_keys_and_skips_layers_0_and_1(tiny_llama_4_layers, prompt):
    full = prefill(tiny_llama_4_layers, prompt)
    compressed = prefill(tiny_llama_4_layers, prompt, KNormPress(0.5))
    for i in (0, 1):
        assert torch.equal(compressed.layers[i].keys, full.layers[i].keys)
    for i in (2, 3):
        norms = full.layers[i].keys.norm(dim=-1)
        lowest = norms.topk(64, largest=False).indices.sort(-1).values
        assert torch.equal(compressed.layers[i].keys, gather_positions(full.layers[i].keys, lowest))
    achieved = 1 - cache_entries(compressed) / cache_entries(full)
    assert achieved == pytest.approx(0.5 * (4 - 2) / 4)


def test_keydiff_keeps_the_keys_that_point_away_from_the_mean_direction():
    generator = torch.Generator().manual_seed(1)
    common = torch.randn(HEAD_DIM, generator=generator)
    keys = common + 0.1 * torch.randn(1, KV_HEADS, 12, HEAD_DIM, generator=generator)
    outliers = [3, 8]
    for position in outliers:  # orthogonal to the shared direction, so far from the mean unit key
        other = torch.randn(HEAD_DIM, generator=generator)
        keys[0, :, position] = other - (other @ common) / (common @ common) * common
    scores = KeyDiffPress(0.5).score(None, None, keys, keys, None, {})
    for head in range(KV_HEADS):  # an independent computation, one key at a time
        unit = [k / k.norm() for k in keys[0, head].double()]
        anchor = sum(unit) / len(unit)
        expected = torch.stack([-(k @ anchor) / anchor.norm() for k in unit])
        torch.testing.assert_close(scores[0, head].double(), expected, rtol=1e-5, atol=1e-6)
        assert sorted(scores[0, head].topk(2).indices.tolist()) == outliers


def test_kept_count_rounding():
    assert n_kept(128, 0.5) == 64 and n_kept(100, 0.7) == 30 and n_kept(100, 0.7, "ceil") == 30
    assert n_kept(10, 0.75) == 2 and n_kept(10, 0.75, "ceil") == 3 and n_kept(10, 0.99) == 1
    with pytest.raises(ValueError, match="fraction removed"):
        KNormPress(1.0)


@pytest.mark.parametrize("ratio", [0.25, 0.5, 0.875])
def test_every_press_removes_the_requested_ratio(ratio, tiny_llama, prompt):
    before = LAYERS * KV_HEADS * prompt.shape[1]
    expected = n_kept(prompt.shape[1], ratio)
    for press in scoring_presses(ratio):
        cache = prefill(tiny_llama, prompt, press)
        assert [layer.keys.shape[-2] for layer in cache.layers] == [expected] * LAYERS, press
        assert 1 - cache_entries(cache) / before == pytest.approx(ratio, abs=1 / prompt.shape[1])
    assert expected == prompt.shape[1] * (1 - ratio)  # 128 x these ratios are whole numbers


def test_composed_press_achieves_the_product_of_kept_fractions(tiny_llama, prompt):
    press = ComposedPress((SnapKVPress(0.5, window=8), KNormPress(0.5, skip_layers=())))
    assert press.compression_ratio == 0.75
    cache = prefill(tiny_llama, prompt, press)
    assert 1 - cache_entries(cache) / cache_entries(prefill(tiny_llama, prompt)) == 0.75
    with pytest.raises(ValueError, match="first in ComposedPress"):
        prefill(tiny_llama, prompt, ComposedPress((KNormPress(0.5, skip_layers=()), TOVAPress(0.5))))


def test_adakv_allocation_floor_then_global_top_k():
    scores = torch.tensor([[[9.0, 8, 7, 6, 5], [0.1, 0.2, 0.3, 0.4, 0.5]]])
    keep = headwise_keep(scores, per_head=2, alpha_safeguard=0.5)  # floor 1 per head, budget 4
    assert keep.tolist() == [[[True, True, True, False, False], [False, False, False, False, True]]]
    assert headwise_keep(scores, per_head=2, alpha_safeguard=0.0).sum(-1).tolist() == [[4, 0]]


@pytest.mark.parametrize("ratio", [0.5, 0.875])
def test_adakv_really_removes_entries(ratio, tiny_llama, prompt):
    cache = prefill(tiny_llama, prompt, AdaKVPress(ExpectedAttentionPress(ratio)))
    before = LAYERS * KV_HEADS * prompt.shape[1]
    assert all(isinstance(layer, HeadwiseLayer) for layer in cache.layers)
    assert cache_entries(cache) == LAYERS * KV_HEADS * n_kept(prompt.shape[1], ratio)
    assert sum(layer.keys.numel() for layer in cache.layers) == (1 - ratio) * before * HEAD_DIM
    floor = int(0.2 * n_kept(prompt.shape[1], ratio))
    assert all(int(layer.lengths.min()) >= floor for layer in cache.layers)


@pytest.mark.parametrize("press", [*scoring_presses(0.0), AdaKVPress(ExpectedAttentionPress(0.0)),
                                   KNormPress(0.0)], ids=lambda p: type(p).__name__)
def test_ratio_zero_generates_exactly_as_without_press(press, tiny_llama, prompt):
    with torch.no_grad():
        reference = tiny_llama.generate(prompt, max_new_tokens=10, do_sample=False)
        with press(tiny_llama):
            generated = tiny_llama.generate(prompt, max_new_tokens=10, do_sample=False)
    assert torch.equal(generated, reference)


def test_generation_runs_after_compression(tiny_llama, prompt):
    with torch.no_grad(), AdaKVPress(ExpectedAttentionPress(0.5))(tiny_llama):
        generated = tiny_llama.generate(prompt, max_new_tokens=8, do_sample=False)
    assert generated.shape == (1, prompt.shape[1] + 8)


@pytest.mark.parametrize("new_tokens", [1, 3])
def test_continuation_after_eviction_uses_absolute_positions(new_tokens, tiny_llama, prompt):
    """StreamingLLM evicts the same positions in every layer and head, so the reference is the
    uncompressed cache with those positions hidden by a 2D attention mask."""
    n, press = prompt.shape[1], StreamingLLMPress(0.5)
    evicted = slice(press.n_sink, press.n_sink + n - n_kept(n, 0.5))
    following = torch.randint(0, 256, (1, new_tokens), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        full = prefill(tiny_llama, prompt)
        mask = torch.ones(1, n + new_tokens, dtype=torch.long)
        mask[:, evicted] = 0
        positions = torch.arange(n, n + new_tokens)[None]
        reference = tiny_llama(input_ids=following, **with_cache(tiny_llama, full), attention_mask=mask, position_ids=positions).logits
        compressed = prefill(tiny_llama, prompt, press)
        with press(tiny_llama):
            logits = tiny_llama(input_ids=following, **with_cache(tiny_llama, compressed)).logits
        wrong = tiny_llama(input_ids=following, **with_cache(tiny_llama, prefill(tiny_llama, prompt, press))).logits
    torch.testing.assert_close(logits, reference, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(wrong, reference, atol=1e-3)  # positions inferred from the shrunken cache


def test_headwise_cache_matches_per_head_masking(tiny_llama, prompt):
    """Attention on the head-wise cache equals full attention with each head's evicted keys masked."""
    press = AdaKVPress(ExpectedAttentionPress(0.5))
    following = torch.randint(0, 256, (1, 3), generator=torch.Generator().manual_seed(3))
    n = prompt.shape[1]
    with torch.no_grad():
        compressed = prefill(tiny_llama, prompt, press)
        full = prefill(tiny_llama, prompt)
        masks = []
        for layer, full_layer in zip(compressed.layers, full.layers):
            kept = torch.zeros(1, KV_HEADS, n, dtype=torch.bool)
            for head in range(KV_HEADS):
                stored = layer.dense()[0][0, head][layer.visible_slots()[0, head]]
                kept[0, head] = (full_layer.keys[0, head][:, None] == stored[None]).all(-1).any(-1)
            allowed = torch.cat([kept[:, :, None].expand(-1, -1, 3, -1), torch.ones(3, 3).tril().bool()[None, None]
                                 .expand(1, KV_HEADS, -1, -1)], dim=-1).repeat_interleave(2, dim=1)
            masks.append(torch.zeros(allowed.shape).masked_fill(~allowed, torch.finfo(torch.float32).min))

        def per_layer_mask(module, args, kwargs):
            kwargs["attention_mask"] = masks[module.layer_idx]
            return args, kwargs

        handles = [layer.self_attn.register_forward_pre_hook(per_layer_mask, with_kwargs=True)
                   for layer in tiny_llama.model.layers]
        try:
            reference = tiny_llama(input_ids=following, **with_cache(tiny_llama, full), position_ids=torch.arange(n, n + 3)[None]).logits
        finally:
            for handle in handles:
                handle.remove()
        with press(tiny_llama):
            logits = tiny_llama(input_ids=following, **with_cache(tiny_llama, compressed)).logits
    torch.testing.assert_close(logits, reference, atol=1e-5, rtol=1e-5)
    assert cache_entries(compressed) == LAYERS * KV_HEADS * (n_kept(n, 0.5) + 3)


def test_unsupported_model_and_padding_are_refused(tiny_llama, prompt):
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64))
    with pytest.raises(ValueError, match="llama, mistral, qwen2, qwen3"):
        with KNormPress(0.5)(gpt2):
            pass
    mask = torch.ones_like(prompt)
    mask[:, :3] = 0
    with pytest.raises(ValueError, match="padded batches"), KNormPress(0.5)(tiny_llama):
        tiny_llama(input_ids=prompt, attention_mask=mask, **with_cache(tiny_llama, DynamicCache(config=tiny_llama.config)))
    assert math.isclose(AdaKVPress(KNormPress(0.25)).compression_ratio, 0.25)


@pytest.mark.parametrize("make", [lambda: SnapKVPress(0.5, window=8), lambda: TOVAPress(0.5),
                                  lambda: ObservedAttentionPress(0.5)], ids=["snapkv", "tova", "observed"])
def test_recomputed_attention_keeps_what_eager_attention_weights_keep(make, tiny_llama, tiny_llama_eager, prompt):
    recomputed, eager = prefill(tiny_llama, prompt, make()), prefill(tiny_llama_eager, prompt, make())
    for layer, eager_layer in zip(recomputed.layers, eager.layers):
        torch.testing.assert_close(layer.keys, eager_layer.keys)


def test_qfilters_skip_layers_leave_those_layers_whole(tiny_llama_4_layers, prompt):
    filters = torch.randn(4, KV_HEADS, HEAD_DIM, generator=torch.Generator().manual_seed(2))
    full = prefill(tiny_llama_4_layers, prompt)
    compressed = prefill(tiny_llama_4_layers, prompt, QFiltersPress(0.5, filters=filters, skip_layers=(0, 1)))
    for i in (0, 1):
        assert torch.equal(compressed.layers[i].keys, full.layers[i].keys)
    for i in (2, 3):
        projection = torch.einsum("bhnd,hd->bhn", full.layers[i].keys, filters[i])
        highest = projection.topk(prompt.shape[-1] // 2).indices.sort(-1).values
        assert torch.equal(compressed.layers[i].keys, gather_positions(full.layers[i].keys, highest))


def test_presses_run_on_a_gemma_model():
    """Gemma (1) is a supported model type: a tiny random one prefills under KNorm and Expected
    Attention, each layer keeps half its pairs, and ratio 0 changes nothing."""
    from transformers import GemmaConfig, GemmaForCausalLM

    torch.manual_seed(0)
    config = GemmaConfig(vocab_size=256, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=16, attn_implementation="sdpa")
    model = GemmaForCausalLM(config).eval()
    prompt = torch.randint(0, 256, (1, 64), generator=torch.Generator().manual_seed(3))
    full = prefill(model, prompt)
    for press in (KNormPress(0.5, skip_layers=()), ExpectedAttentionPress(0.5)):
        compressed = prefill(model, prompt, press)
        assert [layer.keys.shape[2] for layer in compressed.layers] == [32, 32]
    same = prefill(model, prompt, KNormPress(0.0, skip_layers=()))
    for a, b in zip(same.layers, full.layers):
        assert torch.equal(a.keys, b.keys)


def test_snapkv_edge_pooling_divides_by_the_kernel(tiny_llama_eager, prompt):
    """With zero padding counted (default, as kvpress and the SnapKV authors) the pooled scores at the
    kernel // 2 positions of each edge are those averaged inside the range times (positions inside) / kernel;
    elsewhere the two agree."""
    calls = []

    def record(module, args, kwargs, output):
        calls.append((module, kwargs["hidden_states"], dict(kwargs), output[1]))

    handles = [layer.self_attn.register_forward_hook(record, with_kwargs=True)
               for layer in tiny_llama_eager.model.layers]
    try:
        full = prefill(tiny_llama_eager, prompt)
    finally:
        for handle in handles:
            handle.remove()
    window, kernel = 8, 5
    m = prompt.shape[-1] - window
    inside = torch.full((m,), float(kernel))
    inside[:2], inside[-2:] = torch.tensor([3.0, 4.0]), torch.tensor([4.0, 3.0])
    for (module, hidden, kwargs, weights), layer in zip(calls, full.layers):
        counted, inside_only = (SnapKVPress(0.5, window=window, kernel=kernel, pool_counts_padding=flag).score(
            module, hidden, layer.keys, layer.values, weights, kwargs)[..., :m] for flag in (True, False))
        torch.testing.assert_close(counted, inside_only * inside / kernel)
        assert not torch.allclose(counted[..., :2], inside_only[..., :2])


def test_random_press_skip_layers_leave_those_layers_whole(tiny_llama_4_layers, prompt):
    full = prefill(tiny_llama_4_layers, prompt)
    compressed = prefill(tiny_llama_4_layers, prompt, RandomPress(0.5, seed=0, skip_layers=(0, 1)))
    assert [layer.keys.shape[2] for layer in compressed.layers] == [prompt.shape[-1]] * 2 + [prompt.shape[-1] // 2] * 2
    for i in (0, 1):
        assert torch.equal(compressed.layers[i].keys, full.layers[i].keys)

"""Compression during decoding (spec F.a test 8, spec 0 positions): the budget is held through a greedy
generation, a budget above the sequence changes nothing, the kept pairs are the top-k of the wrapped
press's scores on the buffered hidden states, positions stay absolute across repeated compressions
(against a full cache with each layer's and head's evicted positions masked), unsupported presses and
head-wise caches are refused; and streaming perplexity against the one-pass computation."""

import pytest
import torch
from transformers import DynamicCache

from thesis.core.models import with_cache
from thesis.kvcache.adakv import AdaKVPress
from thesis.kvcache.baselines import SnapKVPress, StreamingLLMPress
from thesis.kvcache.decoding import DecodingPress
from thesis.kvcache.expected_attention import ExpectedAttentionPress
from thesis.kvcache.knorm import KNormPress
from thesis.kvcache.press import cache_entries, gather_positions
from thesis.kvcache.tasks.perplexity import compressed_nll
from thesis.kvcache.tasks.streaming_perplexity import streaming_nll

INTERVAL, TARGET, BUFFER = 8, 48, 16
KV_HEADS, GROUPS = 2, 2


def decoding_press(inner, compress_prefill: bool = False, target: int = TARGET) -> DecodingPress:
    return DecodingPress(inner, compression_interval=INTERVAL, target_size=target,
                         hidden_states_buffer_size=BUFFER, compress_prefill=compress_prefill)


def expected_lengths(prompt_length: int, steps: int, compress_prefill: bool) -> list[int]:
    """Cache length after the prefill and after each decoding step, by the schedule of decoding.py."""
    n = min(prompt_length, TARGET) if compress_prefill else prompt_length
    lengths = [n]
    for step in range(1, steps + 1):
        n += 1
        if step % INTERVAL == 0:
            n = min(n, TARGET)
        lengths.append(n)
    return lengths


@pytest.mark.parametrize("prompt_length, compress_prefill", [(32, False), (128, True)])
def test_budget_is_held_during_greedy_generation(prompt_length, compress_prefill, tiny_llama, prompt):
    press, lengths = decoding_press(KNormPress(skip_layers=()), compress_prefill), []

    def record(module, args, kwargs, output):
        lengths.append({layer.get_seq_length() for layer in (output.cache if hasattr(output, "cache") else output.past_key_values).layers})

    with torch.no_grad(), press(tiny_llama):
        handle = tiny_llama.model.register_forward_hook(record, with_kwargs=True)
        try:
            generated = tiny_llama.generate(prompt[:, :prompt_length], max_new_tokens=40, min_new_tokens=40,
                                            do_sample=False)
        finally:
            handle.remove()
    assert generated.shape[1] == prompt_length + 40
    expected = expected_lengths(prompt_length, 39, compress_prefill)
    assert lengths == [{n} for n in expected]
    assert max(expected[1:]) <= TARGET + INTERVAL and expected.count(TARGET) >= 3


@pytest.mark.parametrize("compress_prefill", [False, True])
def test_budget_above_the_sequence_changes_nothing(compress_prefill, tiny_llama, prompt):
    press = decoding_press(ExpectedAttentionPress(), compress_prefill, target=1000)
    with torch.no_grad():
        reference = tiny_llama.generate(prompt, max_new_tokens=20, min_new_tokens=20, do_sample=False)
        with press(tiny_llama):
            generated = tiny_llama.generate(prompt, max_new_tokens=20, min_new_tokens=20, do_sample=False)
    assert torch.equal(generated, reference)


def decode_recorded(model, press, prompt, tokens):
    """Prefill then feed `tokens` one at a time under `press`; per step: logits, and per layer what its
    attention received (hidden states, kwargs) and the cache before and after the press's hook."""
    cache, steps = DynamicCache(config=model.config), []

    def before_press(module, args, kwargs, output):  # registered first, so it runs before compression
        layer = cache.layers[module.layer_idx]
        steps[-1]["layers"].append({"hidden": kwargs["hidden_states"], "kwargs": dict(kwargs),
                                    "keys": layer.keys.clone(), "values": layer.values.clone()})

    handles = [layer.self_attn.register_forward_hook(before_press, with_kwargs=True) for layer in model.model.layers]
    try:
        with torch.no_grad(), press(model):
            for ids in [prompt, *tokens.split(1, dim=1)]:
                steps.append({"layers": []})
                steps[-1]["logits"] = model(input_ids=ids, **with_cache(model, cache)).logits[:, -1]
                for record, layer in zip(steps[-1]["layers"], cache.layers):
                    record["kept_keys"], record["kept_values"] = layer.keys.clone(), layer.values.clone()
    finally:
        for handle in handles:
            handle.remove()
    return steps


def knorm_scores(module, buffered, record, press):
    return -record["keys"].float().norm(dim=-1)


def ea_scores(module, buffered, record, press):
    return press.score(module, buffered, record["keys"], record["values"], None, record["kwargs"])


@pytest.mark.parametrize("inner, scores", [(KNormPress(skip_layers=()), knorm_scores),
                                           (ExpectedAttentionPress(), ea_scores)], ids=["knorm", "ea"])
def test_kept_pairs_are_the_top_k_of_the_wrapped_press(inner, scores, tiny_llama, prompt):
    tokens = torch.randint(0, 256, (1, 40), generator=torch.Generator().manual_seed(4))
    steps = decode_recorded(tiny_llama, decoding_press(inner), prompt[:, :64], tokens)
    compressions = 0
    for number, step in enumerate(steps[1:], start=1):
        for layer_idx, record in enumerate(step["layers"]):
            if number % INTERVAL:
                assert torch.equal(record["kept_keys"], record["keys"])
                continue
            compressions += 1
            history = torch.cat([s["layers"][layer_idx]["hidden"] for s in steps[:number + 1]], dim=1)
            module = tiny_llama.model.layers[layer_idx].self_attn
            with torch.no_grad():
                top = scores(module, history[:, -BUFFER:], record, inner).topk(TARGET, dim=-1).indices.sort(-1).values
            assert torch.equal(record["kept_keys"], gather_positions(record["keys"], top))
            assert torch.equal(record["kept_values"], gather_positions(record["values"], top))
    assert compressions == 5 * len(tiny_llama.model.layers)


def held_positions(steps, prompt_length: int) -> list[list[torch.Tensor]]:
    """Per step and layer, the absolute positions (kv_heads, n) the attention saw: the positions the layer
    held before the step, plus the new token's; found by matching kept keys with the keys before."""
    held = [torch.arange(prompt_length).expand(KV_HEADS, -1) for _ in steps[0]["layers"]]
    seen, position = [], prompt_length
    for step in steps[1:]:
        seen.append([])
        for layer_idx, record in enumerate(step["layers"]):
            candidates = torch.cat([held[layer_idx], torch.full((KV_HEADS, 1), position)], dim=1)
            seen[-1].append(candidates)
            before, kept = record["keys"][0], record["kept_keys"][0]
            slots = (kept[:, :, None] == before[:, None]).all(-1).float().argmax(-1)
            held[layer_idx] = candidates.gather(1, slots)
        position += 1
    return seen


@pytest.mark.parametrize("inner", [KNormPress(skip_layers=()), ExpectedAttentionPress(),
                                   StreamingLLMPress()], ids=lambda p: type(p).__name__)
def test_positions_stay_absolute_across_compressions(inner, tiny_llama, prompt):
    """Each step's logits equal those of the uncompressed cache in which every layer's query heads see
    only the positions their KV head still holds."""
    prompt, tokens = prompt[:, :64], torch.randint(0, 256, (1, 40), generator=torch.Generator().manual_seed(5))
    steps = decode_recorded(tiny_llama, decoding_press(inner), prompt, tokens)
    seen = held_positions(steps, prompt.shape[1])
    heads_differ = any(not torch.equal(layer[0], layer[1]) for step in seen for layer in step)
    assert heads_differ == (not isinstance(inner, StreamingLLMPress))  # per-head masks are really needed
    masks = []

    def masked(module, args, kwargs):
        kwargs["attention_mask"] = masks[module.layer_idx]
        return args, kwargs

    cache = DynamicCache(config=tiny_llama.config)
    with torch.no_grad():
        tiny_llama(input_ids=prompt, **with_cache(tiny_llama, cache))
        handles = [layer.self_attn.register_forward_pre_hook(masked, with_kwargs=True)
                   for layer in tiny_llama.model.layers]
        try:
            for step, (token, positions) in enumerate(zip(tokens.split(1, dim=1), seen)):
                position = prompt.shape[1] + step
                masks[:] = []
                for layer_positions in positions:
                    allowed = torch.zeros(KV_HEADS, position + 1, dtype=torch.bool)
                    allowed.scatter_(1, layer_positions, True)
                    allowed = allowed.repeat_interleave(GROUPS, dim=0)[None, :, None]
                    masks.append(torch.zeros(allowed.shape).masked_fill(~allowed, torch.finfo(torch.float32).min))
                reference = tiny_llama(input_ids=token, **with_cache(tiny_llama, cache), position_ids=torch.tensor([[position]])).logits
                torch.testing.assert_close(steps[step + 1]["logits"], reference[:, -1], atol=1e-5, rtol=1e-5)
        finally:
            for handle in handles:
                handle.remove()


def test_unsupported_presses_and_settings_are_refused():
    with pytest.raises(ValueError, match="wraps a scoring Press.*AdaKVPress"):
        DecodingPress(AdaKVPress(ExpectedAttentionPress()))
    with pytest.raises(ValueError, match="SnapKVPress .*cannot re-score"):
        DecodingPress(SnapKVPress())
    with pytest.raises(ValueError, match="compression_interval must be a positive integer"):
        DecodingPress(KNormPress(), compression_interval=0)


def test_head_wise_cache_is_refused(tiny_llama, prompt):
    cache = DynamicCache(config=tiny_llama.config)
    with torch.no_grad():
        with AdaKVPress(ExpectedAttentionPress(0.5))(tiny_llama):
            tiny_llama(input_ids=prompt, **with_cache(tiny_llama, cache))
        with pytest.raises(ValueError, match="head-wise"), decoding_press(KNormPress())(tiny_llama):
            tiny_llama(input_ids=prompt[:, :1], **with_cache(tiny_llama, cache))


CONTEXT = 16


def test_streaming_perplexity_without_press_is_the_one_pass_perplexity(tiny_llama, prompt):
    streamed = streaming_nll(tiny_llama, prompt, CONTEXT, None)
    one_pass = compressed_nll(tiny_llama, prompt, CONTEXT, None)
    assert streamed.n_tokens == one_pass.n_tokens == prompt.shape[1] - CONTEXT
    assert streamed.nll_sum == pytest.approx(one_pass.nll_sum, rel=1e-5)
    assert streamed.stats.achieved_ratio == 0.0


def test_streaming_perplexity_holds_the_cache_at_the_budget(tiny_llama, prompt):
    press = DecodingPress(KNormPress(skip_layers=()), compression_interval=1, target_size=32)
    streamed = streaming_nll(tiny_llama, prompt, CONTEXT, press)
    seen = prompt.shape[1] - 1
    assert streamed.stats.achieved_ratio == pytest.approx(1 - 32 / seen)
    assert streamed.nll_sum != pytest.approx(streaming_nll(tiny_llama, prompt, CONTEXT, None).nll_sum, rel=1e-6)


def test_cache_entries_after_streaming(tiny_llama, prompt):
    cache = DynamicCache(config=tiny_llama.config)
    press = DecodingPress(KNormPress(skip_layers=(0,)), compression_interval=1, target_size=32)
    with torch.no_grad(), press(tiny_llama):
        tiny_llama(input_ids=prompt[:, :CONTEXT], **with_cache(tiny_llama, cache))
        for token in prompt[:, CONTEXT:].split(1, dim=1):
            tiny_llama(input_ids=token, **with_cache(tiny_llama, cache))
    assert [layer.get_seq_length() for layer in cache.layers] == [prompt.shape[1], 32]
    assert cache_entries(cache) == KV_HEADS * (prompt.shape[1] + 32)

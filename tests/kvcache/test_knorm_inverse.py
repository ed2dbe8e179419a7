"""knorm.py's additions: `keep="high"` (knorm_inverse, the thesis's keep-high-norm control) keeps exactly
the top-norm keys where KNorm keeps the bottom ones, and `PruneAfterPress` follows the KNorm code's
language-modelling schedule (cut to ceil(keep_ratio n) once a layer holds prune_after pairs)."""

import math

import pytest
import torch
from transformers import DynamicCache

from thesis.core.models import with_cache
from thesis.kvcache.baselines import RandomPress
from thesis.kvcache.knorm import KNormPress, PruneAfterPress
from thesis.kvcache.press import gather_positions

N = 40


def full_cache(model, ids):
    cache = DynamicCache(config=model.config)
    with torch.no_grad():
        model(input_ids=ids, **with_cache(model, cache))
    return cache


def pressed_cache(model, ids, press):
    cache = DynamicCache(config=model.config)
    with torch.no_grad(), press(model):
        model(input_ids=ids, **with_cache(model, cache))
    return cache


@pytest.mark.parametrize("keep, largest", [("high", True), ("low", False)])
@pytest.mark.parametrize("ratio", [0.25, 0.5, 0.9])
def test_keeps_exactly_the_top_or_bottom_norm_keys(keep, largest, ratio, tiny_llama_4_layers, prompt):
    ids = prompt[:, :N]
    full = full_cache(tiny_llama_4_layers, ids)
    pressed = pressed_cache(tiny_llama_4_layers, ids, KNormPress(compression_ratio=ratio, keep=keep, skip_layers=(1,)))
    kept = math.ceil(N * (1 - ratio))
    for layer_idx, (reference, layer) in enumerate(zip(full.layers, pressed.layers)):
        if layer_idx == 1:
            assert torch.equal(layer.keys, reference.keys)
            continue
        norms = reference.keys.norm(dim=-1)
        expected = norms.topk(kept, dim=-1, largest=largest).indices.sort(dim=-1).values
        assert torch.equal(layer.keys, gather_positions(reference.keys, expected))
        assert torch.equal(layer.values, gather_positions(reference.values, expected))
        kept_norms = layer.keys.norm(dim=-1)
        in_kept = (norms[..., :, None] == kept_norms[..., None, :]).any(dim=-1)
        evicted = norms.masked_fill(in_kept, float("nan"))
        if largest:  # every kept norm is at least every evicted one
            assert (kept_norms.amin(dim=-1) >= evicted.nan_to_num(-1.0).amax(dim=-1)).all()
        else:
            assert (kept_norms.amax(dim=-1) <= evicted.nan_to_num(1e9).amin(dim=-1)).all()


def test_keep_must_be_low_or_high():
    with pytest.raises(ValueError, match="keep must be"):
        KNormPress(keep="largest")


def schedule_lengths(context: int, steps: int, prune_after: int, keep_ratio: float) -> list[int]:
    """Cache length after the prefill and after each token, by the rule of the KNorm code."""
    n = context if context < prune_after else math.ceil(keep_ratio * context)
    lengths = [n]
    for _ in range(steps):
        n += 1
        if n >= prune_after:
            n = math.ceil(keep_ratio * n)
        lengths.append(n)
    return lengths


@pytest.mark.parametrize("context, prune_after, keep_ratio", [(1, 20, 0.8), (30, 20, 0.9), (5, 12, 0.5)])
def test_prune_after_follows_the_knorm_code_schedule(context, prune_after, keep_ratio, tiny_llama_4_layers, prompt):
    press = PruneAfterPress(KNormPress(skip_layers=()), prune_after=prune_after, keep_ratio=keep_ratio,
                            skip_layers=(0, 2))
    cache, lengths = DynamicCache(config=tiny_llama_4_layers.config), []
    with torch.no_grad(), press(tiny_llama_4_layers):
        tiny_llama_4_layers(input_ids=prompt[:, :context], **with_cache(tiny_llama_4_layers, cache))
        lengths.append([layer.get_seq_length() for layer in cache.layers])
        for position in range(context, context + 30):
            tiny_llama_4_layers(input_ids=prompt[:, position:position + 1], **with_cache(tiny_llama_4_layers, cache))
            lengths.append([layer.get_seq_length() for layer in cache.layers])
    expected = schedule_lengths(context, 30, prune_after, keep_ratio)
    assert [row[1] for row in lengths] == expected and [row[3] for row in lengths] == expected
    assert [row[0] for row in lengths] == list(range(context, context + 31)) == [row[2] for row in lengths]


def test_prune_after_keeps_the_lowest_norms_at_each_cut(tiny_llama, prompt):
    """With layer 0 unpruned, layer 1's keys equal the uncompressed run's, so each cut can be replayed."""
    ids, prune_after, keep_ratio = prompt[:, :50], 16, 0.75
    reference = full_cache(tiny_llama, ids).layers[1].keys
    press = PruneAfterPress(KNormPress(skip_layers=()), prune_after=prune_after, keep_ratio=keep_ratio,
                            skip_layers=(0,))
    cache = DynamicCache(config=tiny_llama.config)
    with torch.no_grad(), press(tiny_llama):
        for position in range(ids.shape[1]):
            tiny_llama(input_ids=ids[:, position:position + 1], **with_cache(tiny_llama, cache))
    slots = torch.arange(0, 1).expand(1, 2, -1)
    for position in range(1, ids.shape[1]):
        slots = torch.cat([slots, torch.full((1, 2, 1), position)], dim=-1)
        if slots.shape[-1] >= prune_after:
            norms = reference.norm(dim=-1).gather(-1, slots)
            kept = norms.topk(math.ceil(keep_ratio * slots.shape[-1]), dim=-1, largest=False).indices
            slots = slots.gather(-1, kept.sort(dim=-1).values)
    assert torch.allclose(cache.layers[1].keys, gather_positions(reference, slots), atol=1e-5)


def test_prune_after_validates_its_fields():
    with pytest.raises(ValueError, match="prune_after"):
        PruneAfterPress(RandomPress(), prune_after=0)
    with pytest.raises(ValueError, match="keep_ratio"):
        PruneAfterPress(RandomPress(), keep_ratio=1.0)
    with pytest.raises(ValueError, match="compression_interval"):
        PruneAfterPress(RandomPress(), compression_interval=4)

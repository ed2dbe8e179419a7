"""Q-Filters (spec B.1, E.5, F.a test 4): SVD recovers a planted dominant query direction with the
sign that makes queries project positively (both sign rules), calibration on a tiny model gives
(layers, kv_heads, head_dim) GQA-averaged filters, the query sample is the documented one (positions
of the smallest seeded draws, rows equal to directly computed queries, independent of the batch
split, nested across sample sizes), and filters round-trip through safetensors in both sign
conventions."""

import pytest
import torch

from thesis.kvcache.qfilters import (
    QFiltersPress,
    calibrate_q_filters,
    dominant_direction,
    load_q_filters,
    sample_queries,
    save_q_filters,
)
from thesis.kvcache.queries import post_rope_queries


@pytest.mark.parametrize("sign_rule", ["sum", "majority"])
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_planted_direction_and_sign_are_recovered(sign_rule, sign):
    generator = torch.Generator().manual_seed(0)
    direction = torch.nn.functional.normalize(torch.randn(16, generator=generator), dim=0)
    queries = sign * 3 * direction + torch.randn(3000, 16, generator=generator)
    found = dominant_direction(queries, sign_rule)
    assert torch.nn.functional.cosine_similarity(found, sign * direction, dim=0) > 0.99
    assert (queries @ found).mean() > 0


def test_unknown_sign_rule_is_refused():
    with pytest.raises(ValueError, match="sign_rule"):
        dominant_direction(torch.randn(10, 4), "median")


def test_calibration_averages_each_groups_oriented_directions(tiny_llama):
    batches = [torch.randint(0, 256, (2, 64), generator=torch.Generator().manual_seed(i)) for i in range(2)]
    filters = calibrate_q_filters(tiny_llama, batches, num_samples=10_000)  # more than the 256 queries: all used
    assert filters.shape == (2, 2, 16)
    layer, rotary = tiny_llama.model.layers[0], tiny_llama.model.rotary_emb
    with torch.no_grad():
        embedded = [tiny_llama.model.embed_tokens(b) for b in batches]
        queries = torch.cat([post_rope_queries(layer.self_attn, layer.input_layernorm(x),
                                               rotary(x, torch.arange(64)[None])) for x in embedded])
    per_head = torch.stack([dominant_direction(head.flatten(0, 1)) for head in queries.transpose(0, 1)])
    torch.testing.assert_close(filters[0], per_head.view(2, 2, 16).mean(1), rtol=1e-4, atol=1e-5)
    for head, direction in zip(queries.transpose(0, 1), per_head):
        assert (head.flatten(0, 1) @ direction).mean() > 0


def all_queries_of_first_layer(model, batches):
    """(heads, tokens, head_dim) post-RoPE queries of layer 0, tokens numbered batch-major in order."""
    layer, rotary = model.model.layers[0], model.model.rotary_emb
    with torch.no_grad():
        parts = []
        for batch in batches:
            x = model.model.embed_tokens(batch)
            positions = torch.arange(batch.shape[1])[None]
            parts.append(post_rope_queries(layer.self_attn, layer.input_layernorm(x), rotary(x, positions)))
    return torch.cat([p.transpose(0, 1).flatten(1, 2) for p in parts], dim=1)


def test_sample_is_the_smallest_seeded_draws_and_holds_their_queries(tiny_llama):
    batches = [torch.randint(0, 256, (2, 64), generator=torch.Generator().manual_seed(i)) for i in range(2)]
    sample = sample_queries(tiny_llama, batches, num_samples=50, seed=3)
    draws = torch.rand(256, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    assert torch.equal(sample.positions, draws.argsort()[:50])
    assert len(sample.queries) == 2 and sample.queries[0].shape == (4, 50, 16)
    expected = all_queries_of_first_layer(tiny_llama, batches)[:, sample.positions]
    torch.testing.assert_close(sample.queries[0], expected, rtol=1e-4, atol=1e-5)


def test_sample_does_not_depend_on_the_batch_split_and_is_nested(tiny_llama):
    tokens = torch.randint(0, 256, (4, 32), generator=torch.Generator().manual_seed(5))
    splits = [[tokens], list(tokens.split(1)), list(tokens.split(3))]
    samples = [sample_queries(tiny_llama, batches, num_samples=40, seed=1) for batches in splits]
    for other in samples[1:]:
        assert torch.equal(other.positions, samples[0].positions)
        for ours, theirs in zip(other.queries, samples[0].queries):
            torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)
    larger = sample_queries(tiny_llama, splits[1], num_samples=100, seed=1)
    assert torch.equal(larger.positions[:40], samples[1].positions)
    for ours, theirs in zip(larger.queries, samples[1].queries):
        assert torch.equal(ours[:, :40], theirs)
    everything = sample_queries(tiny_llama, splits[0], num_samples=10_000)
    assert torch.equal(everything.positions.sort().values, torch.arange(128))


def test_sampling_refuses_empty_input(tiny_llama):
    with pytest.raises(ValueError, match="num_samples"):
        sample_queries(tiny_llama, [torch.zeros(1, 4, dtype=torch.long)], num_samples=0)
    with pytest.raises(ValueError, match="no batches"):
        calibrate_q_filters(tiny_llama, [])


def test_saved_filters_round_trip_in_both_conventions(tmp_path, tiny_llama):
    filters = torch.randn(2, 2, 16, generator=torch.Generator().manual_seed(0))
    save_q_filters(filters, tmp_path / "positive.safetensors")
    save_q_filters(-filters, tmp_path / "negated.safetensors")  # the authors' published convention
    assert torch.equal(load_q_filters(tmp_path / "positive.safetensors"), filters)
    assert torch.equal(load_q_filters(tmp_path / "negated.safetensors", stored_negated=True), filters)
    keys = torch.randn(1, 2, 40, 16, generator=torch.Generator().manual_seed(1))
    module = tiny_llama.model.layers[1].self_attn
    kept = [QFiltersPress(0.5, filters=f).score(module, None, keys, keys, None, {}).topk(20).indices.sort().values
            for f in (filters, load_q_filters(tmp_path / "negated.safetensors", stored_negated=True))]
    assert torch.equal(kept[0], kept[1])
    wrong_shape = QFiltersPress(0.5, filters=torch.zeros(3, 2, 16))
    with pytest.raises(ValueError, match=r"shape \(2, 2, 16\)"):
        wrong_shape.attach(tiny_llama)

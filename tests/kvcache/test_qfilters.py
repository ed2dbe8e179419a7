"""Q-Filters (spec B.1, E.5, F.a test 4): SVD recovers a planted dominant query direction with the
sign that makes queries project positively (both sign rules), calibration on a tiny model gives
(layers, kv_heads, head_dim) GQA-averaged filters, and filters round-trip through safetensors in
both sign conventions."""

import pytest
import torch

from thesis.kvcache.qfilters import (
    QFiltersPress,
    calibrate_q_filters,
    dominant_direction,
    load_q_filters,
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

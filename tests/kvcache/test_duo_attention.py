"""DuoAttention (thesis 4.3 baseline): the authors' pattern files, which heads stream, what the cache
keeps, the realised ratio, kvpress's on-the-fly scores at a known value, and the runner's sources."""

import json

import pytest
import torch
from kvpress_hooks import prefill

from thesis.core.errors import ConfigError, DataNotFoundError
from thesis.core.models import with_cache
from thesis.kvcache.duo_attention import (DuoAttentionPress, on_the_fly_head_scores, read_attention_patterns,
                                          streaming_heads)
from thesis.kvcache.headwise_cache import HeadwiseLayer
from thesis.kvcache.press import cache_entries
from thesis.kvcache.runner import build_press
from thesis.kvcache.tasks.cache_stats import cache_stats

LAYERS, KV_HEADS = 2, 2


def write_patterns(folder, scores, sink=4, recent=8):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"sink_size": sink, "recent_size": recent, "lr": 0.02}))
    (folder / "full_attention_heads.tsv").write_text("\n".join("\t".join(str(v) for v in row) for row in scores))
    return folder


def test_pattern_files_are_read_and_clipped(tmp_path):
    patterns = read_attention_patterns(write_patterns(tmp_path / "llama", [[0.5, 1.3], [-0.2, 0.1]], 64, 256))
    assert (patterns.sink_size, patterns.recent_size) == (64, 256)
    assert patterns.head_scores.tolist() == [[0.5, 1.0], [0.0, 0.1]]
    (tmp_path / "llama" / "full_attention_heads.tsv").unlink()
    with pytest.raises(FileNotFoundError, match="full_attention_heads.tsv"):
        read_attention_patterns(tmp_path / "llama")


def test_the_lowest_scoring_heads_stream():
    scores = torch.tensor([[0.9, 0.1, 0.5], [0.3, 0.8, 0.2]])
    assert streaming_heads(scores, 0.5).tolist() == [[False, True, False], [True, False, True]]
    assert streaming_heads(scores, 0.0).sum() == 0 and streaming_heads(scores, 1.0).all()
    # 6 heads x 0.25 = 1.5 rounds half to even (Python's round, as kvpress): 2 heads
    assert streaming_heads(scores, 0.25).tolist() == [[False, True, False], [False, False, True]]


def test_streaming_heads_keep_sink_and_recent_window_retrieval_heads_keep_all(tiny_llama, prompt):
    scores = torch.tensor([[0.1, 0.9], [0.8, 0.2]])  # layer 0 head 0 and layer 1 head 1 stream at 0.5
    press = DuoAttentionPress(0.5, head_scores=scores, sink_size=4, recent_size=8)
    n = prompt.shape[1]
    full, compressed = prefill(tiny_llama, None, prompt), prefill(tiny_llama, press, prompt)
    window = torch.cat([torch.arange(4), torch.arange(n - 8, n)])
    for layer_idx, (head, layer) in enumerate(zip((0, 1), compressed.layers)):
        assert isinstance(layer, HeadwiseLayer)
        assert layer.lengths.tolist() == [[12, n] if head == 0 else [n, 12]]
        keys, _ = layer.dense()
        visible = layer.visible_slots()
        stream = keys[0, head][visible[0, head]]
        torch.testing.assert_close(stream, full.layers[layer_idx].keys[0, head, window], rtol=0, atol=0)
        torch.testing.assert_close(keys[0, 1 - head], full.layers[layer_idx].keys[0, 1 - head], rtol=0, atol=0)
    stats = cache_stats(tiny_llama, compressed, 1, n)
    assert stats.achieved_ratio == pytest.approx(0.5 * (1 - 12 / n))
    assert cache_entries(compressed) == LAYERS * (n + 12)


def test_nothing_is_removed_at_ratio_zero_or_when_the_window_covers_the_prompt(tiny_llama, prompt):
    scores = torch.rand(LAYERS, KV_HEADS, generator=torch.Generator().manual_seed(0))
    n = prompt.shape[1]
    full = prefill(tiny_llama, None, prompt)
    for press in (DuoAttentionPress(0.0, head_scores=scores, sink_size=4, recent_size=8),
                  DuoAttentionPress(1.0, head_scores=scores, sink_size=n // 2, recent_size=n - n // 2)):
        cache = prefill(tiny_llama, press, prompt)
        assert cache_entries(cache) == cache_entries(full)
        for ours, theirs in zip(cache.layers, full.layers):
            assert not isinstance(ours, HeadwiseLayer)
            assert torch.equal(ours.keys, theirs.keys)


def test_generation_continues_from_the_streaming_cache(tiny_llama, prompt):
    press = DuoAttentionPress(1.0, head_scores=torch.zeros(LAYERS, KV_HEADS), sink_size=4, recent_size=8)
    cache = prefill(tiny_llama, press, prompt)
    with torch.no_grad(), press(tiny_llama):
        logits = tiny_llama(input_ids=prompt[:, -1:], **with_cache(tiny_llama, cache)).logits
    assert logits.shape == (1, 1, tiny_llama.config.vocab_size) and torch.isfinite(logits).all()
    assert cache_entries(cache) == LAYERS * KV_HEADS * 13


def test_on_the_fly_scores_of_uniform_attention(tiny_llama):
    """With zero queries every head attends uniformly, so the area under the cumulated attention curve
    is the mean of (j + 1) / q_len over j < q_len: (q_len + 1) / (2 q_len)."""
    ids = torch.randint(0, 256, (2, 40), generator=torch.Generator().manual_seed(0))
    weights = [layer.self_attn.q_proj.weight for layer in tiny_llama.model.layers]
    saved = [w.detach().clone() for w in weights]
    try:
        with torch.no_grad():
            for w in weights:
                w.zero_()
        scores = on_the_fly_head_scores(tiny_llama, [ids], q_len=50)
    finally:
        with torch.no_grad():
            for w, value in zip(weights, saved):
                w.copy_(value)
    torch.testing.assert_close(scores, torch.full((LAYERS, KV_HEADS), 51 / 100, dtype=torch.float64))


def test_on_the_fly_scores_lie_in_the_unit_interval_and_differ_between_heads(tiny_llama):
    ids = torch.randint(0, 256, (2, 40), generator=torch.Generator().manual_seed(0))
    scores = on_the_fly_head_scores(tiny_llama, [ids], q_len=50)
    assert scores.shape == (LAYERS, KV_HEADS)
    assert bool(((scores > 0) & (scores <= 1)).all()) and scores.unique().numel() == scores.numel()


def test_runner_builds_the_press_from_either_source(tiny_llama, tmp_path):
    spec = {"_target_": "thesis.kvcache.duo_attention.DuoAttentionPress"}
    prepared = {}
    folder = write_patterns(tmp_path / "patterns", [[0.1, 0.9], [0.8, 0.2]], sink=2, recent=6)
    press = build_press({**spec, "patterns": str(folder)}, 0.5, tiny_llama, prepared)
    assert (press.sink_size, press.recent_size, press.compression_ratio) == (2, 6, 0.5)
    press = build_press({**spec, "patterns": {"random_sequences": 2, "length": 32, "q_len": 40}}, 0.25,
                        tiny_llama, prepared)
    assert (press.sink_size, press.recent_size) == (128, 256) and press.head_scores.shape == (LAYERS, KV_HEADS)
    assert len(prepared) == 2
    with pytest.raises(DataNotFoundError, match="attn_patterns"):
        build_press({**spec, "patterns": str(tmp_path / "missing")}, 0.5, tiny_llama, {})
    with pytest.raises(ConfigError, match="random_sequences"):
        build_press({**spec, "patterns": {"sequences": 2}}, 0.5, tiny_llama, {})


def test_head_scores_must_match_the_model(tiny_llama, prompt):
    press = DuoAttentionPress(0.5, head_scores=torch.zeros(3, KV_HEADS))
    with pytest.raises(ValueError, match=r"\(layers, kv_heads\) = \(2, 2\)"):
        prefill(tiny_llama, press, prompt)

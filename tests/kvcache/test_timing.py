"""Cost runners on the smoke twins of kv_qfilters_ttft and kv_ea_memory: one row per press x ratio (x length),
the device recorded, and cache bytes equal to the kept fraction of the uncompressed cache's bytes, counted
here from the model's shapes. Speed itself is not asserted."""

import math

import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf
from transformers import AutoConfig

from thesis.core.experiment import apply_scale
from thesis.core.rundir import RunDir
from thesis.kvcache.knorm import KNormPress
from thesis.kvcache.timing import first_token, peak_memory, time_to_first_token, timed


def composed(compose_experiment, name):
    cfg = apply_scale(compose_experiment(name))
    OmegaConf.resolve(cfg)
    return cfg


def kept_bytes(config, tokens: int, ratio: float) -> int:
    """L x H_kv x floor(n (1 - r)) x d x 2 (K and V) x 4 bytes (float32)."""
    head_dim = config.hidden_size // config.num_attention_heads
    kept = max(1, math.floor(tokens * (1 - ratio) + 1e-9))
    return config.num_hidden_layers * config.num_key_value_heads * kept * head_dim * 2 * 4


def test_ttft_table(compose_experiment, tmp_path):
    cfg = composed(compose_experiment, "kv_qfilters_ttft")
    run = RunDir(tmp_path / "run")
    metrics = time_to_first_token(cfg, run)
    table = pd.read_csv(run.tables_dir / "ttft.csv")
    presses = [name for name in cfg.method.presses if name != "none"]
    expected = [("none", 0.0)] + [(p, r) for p in presses for r in cfg.method.compression_ratios]
    assert list(zip(table.press, table.ratio)) == expected
    assert (table.device == "cpu").all() and (table.prompt_tokens == cfg.data.prompt_tokens).all()
    assert (table.ttft_ms > 0).all() and (table.ttft_ms >= table.ttft_ms_min).all()
    assert table.compression_factor.tolist() == pytest.approx([1 / (1 - r) for _, r in expected])
    assert table.achieved_ratio.tolist() == pytest.approx([r for _, r in expected])
    assert set(metrics) == {f"{p}/{r:g}/ttft_ms" for p, r in expected}


def test_memory_table_cache_bytes_are_the_kept_fraction(compose_experiment, tmp_path):
    cfg = composed(compose_experiment, "kv_ea_memory")
    run = RunDir(tmp_path / "run")
    peak_memory(cfg, run)
    table = pd.read_csv(run.tables_dir / "memory.csv")
    settings = [("none", 0.0)] + [("expected_attention", r) for r in cfg.method.compression_ratios]
    assert list(zip(table.press, table.ratio, table.length)) == [
        (p, r, n) for n in cfg.data.lengths for p, r in settings]
    config = AutoConfig.from_pretrained(cfg.model.path)
    for row in table.itertuples():
        assert row.uncompressed_cache_bytes == kept_bytes(config, row.length, 0.0)
        assert row.cache_bytes == kept_bytes(config, row.length, row.ratio)
        assert row.cache_bytes == pytest.approx(row.uncompressed_cache_bytes * (1 - row.achieved_ratio))
    assert table.peak_memory_bytes.isna().all() and (table.device == "cpu").all()


def test_first_token_is_the_argmax_after_the_compressed_prefill(tiny_llama, prompt):
    seconds, (token, cache) = timed(lambda: first_token(tiny_llama, prompt, KNormPress(0.5, skip_layers=())),
                                    torch.device("cpu"))
    assert seconds > 0
    assert token.item() == tiny_llama(input_ids=prompt).logits[0, -1].argmax().item()
    assert [layer.keys.shape[-2] for layer in cache.layers] == [prompt.shape[1] // 2] * 2

"""Reconstruction-error runner: zero without eviction, per-layer errors against a hand computation (and
the miniature's error their mean), the oracle's score against eager attention weights, and the table of
the kv_ea_reconstruction smoke."""

import math

import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf
from transformers import DynamicCache

from thesis.core.experiment import apply_scale
from thesis.core.models import with_cache
from thesis.core.rundir import RunDir
from thesis.kvcache.knorm import KNormPress
from thesis.kvcache.mini.reconstruction import reconstruction_error
from thesis.kvcache.oracle import FutureAttentionPress, continuation_run, layer_errors
from thesis.kvcache.reconstruction_eval import evaluate_reconstruction

PREFIX = 96


def split(prompt):
    return prompt[:, :PREFIX], prompt[:, PREFIX:]


def test_no_eviction_gives_zero_error(tiny_llama, prompt):
    prefix, continuation = split(prompt)
    reference = continuation_run(tiny_llama, prefix, continuation, None)
    same = continuation_run(tiny_llama, prefix, continuation, KNormPress(0.0, skip_layers=()))
    for target in ("residual", "attention_output"):
        errors = layer_errors(getattr(reference, target), getattr(same, target))
        assert torch.allclose(errors, torch.zeros(2, 1), atol=1e-5)
    config = tiny_llama.config
    assert reference.prefix_pairs == same.prefix_pairs == config.num_hidden_layers * config.num_key_value_heads * PREFIX
    assert reference.attention_output.shape == (2, 1, prompt.shape[1] - PREFIX, config.hidden_size)


def hand_layer_errors(reference: torch.Tensor, compressed: torch.Tensor) -> list[list[float]]:
    """Per layer and sequence: sqrt(sum of squared differences) per token, averaged over tokens, in float64."""
    layers, batch, tokens, _ = reference.shape
    return [[sum(math.sqrt(float(((reference[l, b, t].double() - compressed[l, b, t].double()) ** 2).sum()))
                 for t in range(tokens)) / tokens for b in range(batch)] for l in range(layers)]


def test_layer_errors_against_a_hand_computation(tiny_llama, prompt):
    prefix, continuation = split(prompt)
    reference = continuation_run(tiny_llama, prefix, continuation, None)
    compressed = continuation_run(tiny_llama, prefix, continuation, KNormPress(0.5, skip_layers=()))
    per_layer = layer_errors(reference.residual, compressed.residual)
    by_hand = hand_layer_errors(reference.residual, compressed.residual)
    assert per_layer.tolist() == [pytest.approx(row, rel=1e-5) for row in by_hand]
    assert (per_layer > 0).all()
    miniature = reconstruction_error(reference, compressed)  # M4: mean over layers, per sequence
    assert miniature.tolist() == pytest.approx([sum(col) / len(col) for col in zip(*by_hand)], rel=1e-5)
    assert compressed.prefix_pairs == reference.prefix_pairs // 2
    outputs = layer_errors(reference.attention_output, compressed.attention_output)
    assert outputs.tolist() == [pytest.approx(row, rel=1e-5)
                                for row in hand_layer_errors(reference.attention_output, compressed.attention_output)]
    assert (outputs > 0).all()


@torch.no_grad()
def test_oracle_scores_are_the_true_future_attention_times_value_norms(tiny_llama_eager, prompt):
    prefix, continuation = split(prompt)
    reference = continuation_run(tiny_llama_eager, prefix, continuation, None)
    attentions = tiny_llama_eager(input_ids=prompt, output_attentions=True).attentions
    cache = DynamicCache(config=tiny_llama_eager.config)
    tiny_llama_eager(input_ids=prefix, **with_cache(tiny_llama_eager, cache))
    press = FutureAttentionPress(compression_ratio=0.5, future_queries=reference.queries)
    for layer, weights in enumerate(attentions):
        on_prefix = weights[0, :, PREFIX:, :PREFIX]  # (heads, m, PREFIX)
        received = (on_prefix / on_prefix.sum(dim=-1, keepdim=True)).mean(dim=1)  # (heads, PREFIX)
        per_kv_head = torch.stack([received[0:2].mean(0), received[2:4].mean(0)])  # 4 heads, 2 per KV head
        keys, values = cache.layers[layer].keys, cache.layers[layer].values
        expected = per_kv_head * values[0].norm(dim=-1)
        module = tiny_llama_eager.model.layers[layer].self_attn
        scores = press.score(module, None, keys, values, None, {})
        torch.testing.assert_close(scores[0], expected, rtol=1e-4, atol=1e-6)


def test_runner_table(compose_experiment, tmp_path):
    cfg = apply_scale(compose_experiment("kv_ea_reconstruction"))
    OmegaConf.resolve(cfg)
    run = RunDir(tmp_path / "run")
    metrics = evaluate_reconstruction(cfg, run)
    table = pd.read_csv(run.tables_dir / "reconstruction.csv")
    names = list(cfg.method.presses) + ["optimal"]
    ratios = list(cfg.method.compression_ratios)
    assert set(zip(table.press, table.ratio)) == {(n, r) for n in names for r in ratios}
    assert len(table) == len(names) * len(ratios) * 3  # layers 0, 1 and their mean
    assert (table.target == "residual").all()
    assert table.achieved_ratio.tolist() == pytest.approx(table.ratio.tolist())
    for (name, ratio), rows in table.groupby(["press", "ratio"]):
        layers = rows[rows.layer != "mean"].error
        assert rows[rows.layer == "mean"].error.item() == pytest.approx(layers.mean())
        assert metrics[f"{name}/{ratio:g}/error"] == pytest.approx(layers.mean())

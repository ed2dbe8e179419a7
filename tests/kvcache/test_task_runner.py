"""Perplexity under compression against an independent computation, and the press x ratio x task runner
on the kv_smoke experiment's tiny twin: its table, achieved ratios and metrics."""

import math

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf, open_dict

from thesis.core.experiment import apply_scale
from thesis.core.rundir import RunDir
from thesis.kvcache.knorm import KNormPress
from thesis.kvcache.runner import evaluate_presses
from thesis.kvcache.tasks.perplexity import compressed_nll

CONTEXT = 96


@torch.no_grad()
def test_perplexity_at_ratio_zero_is_the_uncompressed_models(tiny_llama, prompt):
    logits = tiny_llama(input_ids=prompt).logits[0, CONTEXT - 1:-1]
    expected = F.cross_entropy(logits, prompt[0, CONTEXT:], reduction="sum").item()
    for press in (None, KNormPress(0.0, skip_layers=())):
        scored = compressed_nll(tiny_llama, prompt, CONTEXT, press)
        assert scored.n_tokens == prompt.shape[1] - CONTEXT
        assert scored.nll_sum == pytest.approx(expected, rel=1e-5)
        assert scored.stats.achieved_ratio == 0.0
    config = tiny_llama.config
    full_bytes = config.num_hidden_layers * config.num_key_value_heads * CONTEXT * 16 * 2 * 4
    assert compressed_nll(tiny_llama, prompt, CONTEXT, None).stats.cache_bytes == full_bytes


@torch.no_grad()
def test_compressed_perplexity_uses_the_compressed_cache(tiny_llama, prompt):
    scored = compressed_nll(tiny_llama, prompt, CONTEXT, KNormPress(0.5, skip_layers=()))
    assert scored.stats.achieved_ratio == 0.5
    assert scored.nll_sum != pytest.approx(compressed_nll(tiny_llama, prompt, CONTEXT, None).nll_sum, rel=1e-6)


@pytest.fixture
def smoke_config(compose_experiment):
    cfg = apply_scale(compose_experiment("kv_smoke"))
    with open_dict(cfg):
        cfg.method.presses = {name: cfg.method.presses[name]
                              for name in ("none", "knorm", "streaming_llm", "qfilters", "adakv_expected_attention")}
        cfg.method.compression_ratios = [0.0, 0.5]
        cfg.data.tasks.needle.depths_percent = [50]
        cfg.data.tasks.passkey.samples_per_length = 1
    OmegaConf.resolve(cfg)
    return cfg


def test_runner_table_has_every_press_ratio_task(smoke_config, tmp_path):
    run = RunDir(tmp_path / "run")
    metrics = evaluate_presses(smoke_config, run)
    table = pd.read_csv(run.tables_dir / "scores.csv")
    assert list(table.columns) == ["press", "ratio", "task", "metric", "value", "achieved_ratio", "cache_bytes"]
    settings = [("none", 0.0)] + [(p, r) for p in ("knorm", "streaming_llm", "qfilters", "adakv_expected_attention")
                                  for r in (0.0, 0.5)]
    tasks = {"lm": {"nll", "perplexity", "accuracy"}, "needle": {"rouge1", "token_f1", "contains_answer", "exact_match"},
             "passkey": {"accuracy"}}
    assert len(table) == len(settings) * sum(map(len, tasks.values()))
    for (press, ratio), rows in table.groupby(["press", "ratio"]):
        assert (press, ratio) in settings
        assert {task: set(group.metric) for task, group in rows.groupby("task")} == tasks
        for task, group in rows.groupby("task"):
            achieved = group.achieved_ratio.iloc[0]
            assert achieved == pytest.approx(ratio, abs=0.01 if task != "lm" else 1e-12), (press, task)
            full_bytes = table[(table.press == "none") & (table.task == task)].cache_bytes.iloc[0]
            assert group.cache_bytes.iloc[0] == pytest.approx(full_bytes * (1 - achieved))
    assert metrics["knorm/0.5/lm/perplexity"] == pytest.approx(math.exp(metrics["knorm/0.5/lm/nll"]))
    assert metrics["knorm/0/lm/nll"] == pytest.approx(metrics["none/0/lm/nll"], rel=1e-6)
    predictions = pd.read_csv(run.tables_dir / "predictions.csv")
    assert len(predictions) == len(settings) * 2  # one needle sample, one passkey sample

"""Q-Filters calibration runs (thesis 4.2.11, Figs. 4.38, 4.39): the saved file round-trips to the filters
recomputed on the same sequences, its hash and regeneration command are recorded; the ablation's filters
from nested prefixes of one sample equal separate calibrations at each count (checked row by row against
separate `calibrate_q_filters` calls), and they recover a planted dominant query direction once the
sample is large enough."""

import hashlib

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from transformers import AutoModelForCausalLM, AutoTokenizer

from thesis.core.experiment import apply_scale, execute
from thesis.kvcache.calibration import cosine_rows, nested_filters
from thesis.kvcache.qfilters import calibrate_q_filters, load_q_filters, query_groups, sample_queries


def run_dir_of(compose_experiment, tmp_path, name):
    cfg = compose_experiment(name)
    metrics = execute(cfg, name, [f"experiment={name}", "scale=smoke"])
    (run_dir,) = (tmp_path / "outputs" / name).iterdir()
    return apply_scale(cfg), metrics, run_dir


def model_and_sequences(cfg, corpus):
    model = AutoModelForCausalLM.from_pretrained(cfg.model.path).eval()
    model.set_attn_implementation("sdpa")
    tokenizer = AutoTokenizer.from_pretrained(cfg.model.path)
    return model, instantiate(cfg.data.corpora[corpus], name=corpus).sequences(tokenizer)


def test_calibrate_saves_filters_that_round_trip(compose_experiment, tmp_path):
    cfg, metrics, run_dir = run_dir_of(compose_experiment, tmp_path, "kv_qfilters_calibrate")
    saved = load_q_filters(run_dir / "q_filters.safetensors")
    model, sequences = model_and_sequences(cfg, "pile")
    expected = calibrate_q_filters(model, sequences, num_samples=cfg.method.num_samples, sign_rule="sum", seed=0)
    assert torch.allclose(saved, expected, atol=1e-6)
    config = model.config
    head_dim = config.hidden_size // config.num_attention_heads
    assert tuple(saved.shape) == (config.num_hidden_layers, config.num_key_value_heads, head_dim)
    (row,) = pd.read_csv(run_dir / "tables" / "calibration.csv").to_dict("records")
    assert row["sha256"] == hashlib.sha256((run_dir / "q_filters.safetensors").read_bytes()).hexdigest()
    assert row["command"].startswith("python -m thesis.run experiment=kv_qfilters_calibrate")
    assert f"method.num_samples={cfg.method.num_samples}" in row["command"] and cfg.model.path in row["command"]
    assert metrics["layers"] == config.num_hidden_layers


def test_cosine_rows_against_a_hand_computation():
    reference = torch.tensor([[[1.0, 0.0], [0.0, 2.0]]])
    filters = torch.tensor([[[1.0, 1.0], [0.0, -3.0]]])
    rows = cosine_rows("c", 10, filters, reference)
    assert [(r["layer"], r["kv_head"]) for r in rows] == [(0, 0), (0, 1)]
    assert rows[0]["cosine"] == pytest.approx(2 ** -0.5) and rows[1]["cosine"] == pytest.approx(-1.0)


def test_nested_prefixes_equal_separate_calibrations(tiny_llama):
    batches = [torch.randint(0, 256, (2, 48), generator=torch.Generator().manual_seed(i)) for i in range(3)]
    counts = [5, 20, 80, 200]
    sample = sample_queries(tiny_llama, batches, num_samples=max(counts), seed=4)
    nested = nested_filters(sample.queries, counts, query_groups(tiny_llama), "majority")
    for count in counts:
        separate = calibrate_q_filters(tiny_llama, batches, num_samples=count, sign_rule="majority", seed=4)
        assert torch.equal(nested[count], separate)


def test_nested_filters_recover_a_planted_direction_above_a_minimum_count():
    generator = torch.Generator().manual_seed(0)
    layers, kv_heads, groups, head_dim, n = 3, 2, 2, 16, 3000
    planted = F.normalize(torch.randn(layers, kv_heads, head_dim, generator=generator), dim=-1)
    per_head = planted.repeat_interleave(groups, dim=1)  # (layers, heads, head_dim), shared by a group
    queries = [3 * per_head[layer][:, None] + torch.randn(kv_heads * groups, n, head_dim, generator=generator)
               for layer in range(layers)]
    counts = [10, 30, 100, 300, 1000, 3000]
    found = nested_filters(queries, counts, groups, "sum")
    cosines = {count: F.cosine_similarity(found[count], planted, dim=-1) for count in counts}
    for count in counts[2:]:  # from 100 samples on, every (layer, KV head) finds its direction
        assert cosines[count].min() > 0.99
    assert cosines[3000].min() > 0.999 and cosines[3000].mean() > cosines[10].mean()


def test_ablation_rows_match_separate_calibrations(compose_experiment, tmp_path):
    cfg, metrics, run_dir = run_dir_of(compose_experiment, tmp_path, "kv_qfilters_calibration_ablation")
    ablation = pd.read_csv(run_dir / "tables" / "ablation.csv")
    cosine = pd.read_csv(run_dir / "tables" / "cosine.csv")
    assert len(ablation) == len(cfg.data.corpora) * len(cfg.method.sample_counts)
    assert ablation.perplexity.notna().all()
    model, pile = model_and_sequences(cfg, "pile")
    reference = calibrate_q_filters(model, pile, num_samples=max(cfg.method.sample_counts), sign_rule="sum", seed=0)
    for corpus in cfg.data.corpora:
        _, sequences = model_and_sequences(cfg, corpus)
        for count in cfg.method.sample_counts:
            separate = calibrate_q_filters(model, sequences, num_samples=count, sign_rule="sum", seed=0)
            direct = F.cosine_similarity(separate, reference, dim=-1)
            rows = cosine[(cosine.corpus == corpus) & (cosine.num_samples == count)]
            measured = rows.sort_values(["layer", "kv_head"])
            assert torch.allclose(torch.tensor(measured.cosine.to_numpy(), dtype=torch.float32), direct.flatten(),
                                  atol=1e-5)
            row = ablation[(ablation.corpus == corpus) & (ablation.num_samples == count)].iloc[0]
            assert row.cosine_mean == pytest.approx(float(direct.mean()), abs=1e-5)
    assert (run_dir / "figures" / "kv_qfilters_calibration_ablation.png").is_file()

"""Q-Filters calibration runs (thesis 4.2.11, Figs. 4.38, 4.39): the saved file round-trips to the filters
calibrated independently on the same sequences, its hash and regeneration command are recorded; the
ablation's largest-count reference row has cosine 1 and the other rows match a direct computation."""

import hashlib

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from transformers import AutoModelForCausalLM, AutoTokenizer

from thesis.core.experiment import apply_scale, execute
from thesis.kvcache.calibration import cosine_rows
from thesis.kvcache.qfilters import calibrate_q_filters, load_q_filters


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


def test_ablation_reference_row_is_one_and_rows_match_direct_calibration(compose_experiment, tmp_path):
    cfg, metrics, run_dir = run_dir_of(compose_experiment, tmp_path, "kv_qfilters_calibration_ablation")
    ablation = pd.read_csv(run_dir / "tables" / "ablation.csv")
    cosine = pd.read_csv(run_dir / "tables" / "cosine.csv")
    largest = max(cfg.method.sample_counts)
    reference_row = ablation[(ablation.corpus == "pile") & (ablation.num_samples == largest)].iloc[0]
    assert reference_row.cosine_mean == pytest.approx(1.0, abs=1e-6)
    assert reference_row.cosine_min == pytest.approx(1.0, abs=1e-6)
    assert len(ablation) == len(cfg.data.corpora) * len(cfg.method.sample_counts)
    assert ablation.perplexity.notna().all()
    model, pile = model_and_sequences(cfg, "pile")
    _, code = model_and_sequences(cfg, "code")
    reference = calibrate_q_filters(model, pile, num_samples=largest, sign_rule="sum", seed=0)
    smallest = min(cfg.method.sample_counts)
    direct = F.cosine_similarity(calibrate_q_filters(model, code, num_samples=smallest, sign_rule="sum", seed=0),
                                 reference, dim=-1)
    measured = cosine[(cosine.corpus == "code") & (cosine.num_samples == smallest)].sort_values(["layer", "kv_head"])
    assert torch.allclose(torch.tensor(measured.cosine.to_numpy(), dtype=torch.float32), direct.flatten(), atol=1e-5)
    assert (run_dir / "figures" / "kv_qfilters_calibration_ablation.png").is_file()

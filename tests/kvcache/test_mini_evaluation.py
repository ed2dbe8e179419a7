"""kv_mini evaluations (M1-M4), presses, schedule, training resume and claims, on a tiny random
byte-level Llama, each against an independent computation."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import spearmanr
from transformers import DynamicCache

from thesis.core.models import with_cache
from thesis.kvcache.expected_attention import ExpectedAttentionPress
from thesis.kvcache.knorm import KNormPress
from thesis.kvcache.mini.bootstrap import bootstrap_ci
from thesis.kvcache.mini.claims import GATE_NOTE, evaluate_claims
from thesis.kvcache.mini.correlation import (attention_loss_ratio, attention_received, correlation_analysis,
                                             ea_logits, spearman)
from thesis.kvcache.mini.documents import TrainingStream, equal_length_words, evaluation_documents
from thesis.kvcache.mini.corpus import pydoc_corpus
from thesis.kvcache.mini.model import build_model, load_model
from thesis.kvcache.mini.presses import KeepHighNormPress, RecentWindowPress
from thesis.kvcache.mini.reconstruction import reconstruction_error
from thesis.kvcache.mini.retrieval import greedy_bytes
from thesis.kvcache.mini.runner import check_trained_length
from thesis.kvcache.mini.streaming import streaming_press, token_losses
from thesis.kvcache.mini.tokenizer import BOS
from thesis.kvcache.mini.train import learning_rate, train_model
from thesis.kvcache.oracle import continuation_run
from thesis.kvcache.press import cache_entries

SHAPE = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
         "num_key_value_heads": 2, "head_dim": 8, "max_position_embeddings": 256}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("kvmini")
    build_model(SHAPE, seed=0).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def model(saved):
    return load_model(saved, torch.device("cpu"), "sdpa")


@pytest.fixture(scope="module")
def eager(saved):
    return load_model(saved, torch.device("cpu"), "eager")


def chunks(n=3, length=40, seed=0):
    ids = torch.randint(0, 256, (n, length), generator=torch.Generator().manual_seed(seed))
    ids[:, 0] = BOS
    return ids


def test_spearman_matches_scipy():
    x, y = torch.randn(5, 50, dtype=torch.float64), torch.randn(5, 50, dtype=torch.float64)
    y = y + x * torch.linspace(-1, 1, 5, dtype=torch.float64)[:, None]
    ours = spearman(x, y)
    for i in range(5):
        assert ours[i].item() == pytest.approx(spearmanr(x[i], y[i]).statistic, abs=1e-12)


def test_attention_received_is_the_mean_over_queries_that_see_the_position():
    logits = torch.randn(2, 3, 6, 6).masked_fill(torch.ones(6, 6).triu(1).bool(), float("-inf"))
    attn = logits.softmax(-1)
    expected = torch.stack([attn[..., t:, t].mean(-1) for t in range(6)], dim=-1)
    assert torch.allclose(attention_received(attn), expected)


def test_alr_on_a_hand_built_attention_vector():
    a = torch.tensor([0.5, 0.1, 0.3, 0.1])
    # ideal cumulative loss (ascending attention): 0.1, 0.2, 0.5, 1.0
    # evicting positions 0, 2, 1, 3: 0.5, 0.8, 0.9, 1.0 -> y = 0.4 + 0.6 + 0.4 + 0 = 1.4
    assert attention_loss_ratio(a, torch.tensor([0, 2, 1, 3])).item() == pytest.approx(1.4)
    assert attention_loss_ratio(a, a.argsort()).item() == pytest.approx(0.0)
    random_orders = torch.stack([torch.randperm(4, generator=torch.Generator().manual_seed(s)) for s in range(20)])
    assert (attention_loss_ratio(a.expand(20, 4), random_orders) >= -1e-7).all()


@pytest.mark.parametrize("n_sink", [0, 4])
def test_ea_logits_are_the_presses_expected_attention_before_softmax(model, n_sink):
    module = model.model.layers[1].self_attn
    hidden = torch.randn(1, 30, SHAPE["hidden_size"], generator=torch.Generator().manual_seed(0))
    hidden[:, :n_sink] *= 50  # sinks far from the rest: leaving them in the statistics would show
    keys = torch.randn(1, 2, 30, 8, generator=torch.Generator().manual_seed(1))
    values = torch.randn(1, 2, 30, 8, generator=torch.Generator().manual_seed(2))
    press = ExpectedAttentionPress(n_future_positions=16, n_sink=n_sink, epsilon=0.0)
    press.attach(model)
    logits = ea_logits(press, module, hidden, keys, stats_tokens=20)
    scores = press.score(module, hidden[:, :20], keys, values, None, {"position_ids": torch.arange(20)[None]})
    expected = logits.softmax(-1).view(1, 2, 2, 30).mean(2) * values.norm(dim=-1)
    # the press pins its sinks above every other score; the rest is the expected attention x ||v||
    assert torch.allclose(scores[..., n_sink:], expected[..., n_sink:], atol=1e-6)


def test_correlation_analysis_against_a_direct_computation(eager):
    ids = chunks(n=2, length=40)
    filters = torch.randn(2, 2, 8, generator=torch.Generator().manual_seed(3))
    found = correlation_analysis(eager, ids, filters, n_future=16, stats_tokens=16, batch_size=1)
    heads = pd.DataFrame(found["heads"]).set_index(["layer", "head"])
    cache = DynamicCache(config=eager.config)
    with torch.no_grad():
        out = eager(input_ids=ids, **with_cache(eager, cache), output_attentions=True)
    for layer in range(2):
        attn, keys = out.attentions[layer].double(), cache.layers[layer].keys.double()
        for head in range(4):
            k = keys[:, head // 2]
            rho, qf, bos = [], [], []
            for b in range(2):
                received = np.array([attn[b, head, t:, t].mean().item() for t in range(40)])
                norms = k[b].norm(dim=-1).numpy()
                rho.append(spearmanr(-norms, received).statistic)
                qf.append(spearmanr((k[b] @ filters[layer, head // 2].double()).numpy(), received).statistic)
                bos.append(float(norms.argmin() == 0))
            row = heads.loc[(layer, head)]
            assert row.rho_knorm == pytest.approx(np.mean(rho), abs=1e-5)
            assert row.rho_qfilters == pytest.approx(np.mean(qf), abs=1e-5)
            assert row.bos_min_norm == pytest.approx(np.mean(bos))
            assert row.alr_knorm >= -1e-6 and row.alr_random >= -1e-6
    signs = pd.DataFrame(found["filters"])
    expected = torch.einsum("bhnd,hd->bhn", cache.layers[0].keys, filters[0]).mean(-1).mean(0)
    assert signs[signs.layer == 0].mean_projection.to_numpy() == pytest.approx(expected.numpy(), abs=1e-5)


def test_keep_high_norm_and_recent_window_presses(model):
    keys = torch.randn(1, 2, 20, 8, generator=torch.Generator().manual_seed(0))
    module = model.model.layers[0].self_attn
    kept, _ = KeepHighNormPress(compression_ratio=0.5).compress(module, None, keys, keys, None, {})
    top = keys.norm(dim=-1).topk(10, dim=-1).indices.sort(-1).values
    assert torch.equal(kept, keys.gather(2, top[..., None].expand(-1, -1, -1, 8)))
    windowed = RecentWindowPress(compression_ratio=0.75, press=KNormPress(skip_layers=()), window=3)
    scores = windowed.score(module, None, keys, keys, None, {})
    kept_positions = scores.topk(5, dim=-1).indices
    for h in range(2):
        assert {17, 18, 19} <= set(kept_positions[0, h].tolist())
        low = (-keys[0, h, :17].norm(dim=-1)).topk(2).indices.tolist()
        assert set(low) <= set(kept_positions[0, h].tolist())


def test_streaming_losses_identity_budget_and_bound(model):
    ids = chunks(n=2, length=30)
    full_nll, full_hit = token_losses(model, ids, None)
    same_nll, same_hit = token_losses(model, ids, streaming_press(KNormPress(skip_layers=()), "budget", budget=64))
    assert torch.allclose(full_nll, same_nll, atol=1e-4) and torch.equal(full_hit, same_hit)
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    manual = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), ids[:, 1:], reduction="none")
    assert torch.allclose(full_nll, manual.detach(), atol=1e-5)
    squeezed, _ = token_losses(model, ids, streaming_press(KNormPress(skip_layers=()), "budget", budget=8, window=2))
    assert torch.allclose(squeezed[:, :8], full_nll[:, :8], atol=1e-4)  # identical until the budget binds
    assert not torch.allclose(squeezed, full_nll, atol=1e-4)
    press = streaming_press(KNormPress(skip_layers=()), "knorm", prune_after=10, keep_ratio=0.5)
    assert (press.target_size, press.compression_interval) == (5, 5)


def test_greedy_answer_at_ratio_zero_equals_full_and_compression_shrinks_the_cache(model):
    ids = chunks(n=3, length=24)
    question = torch.full((3, 4), 32)
    full = greedy_bytes(model, ids, question, 5, None)
    assert torch.equal(full, greedy_bytes(model, ids, question, 5, KNormPress(compression_ratio=0.0, skip_layers=())))
    with torch.no_grad():
        logits = model(input_ids=torch.cat([ids, question], 1)).logits[:, -1]
    assert torch.equal(full[:, 0], logits.argmax(-1))
    cache = DynamicCache(config=model.config)
    with KNormPress(compression_ratio=0.5, skip_layers=())(model), torch.no_grad():
        model(input_ids=ids, **with_cache(model, cache))
    assert cache_entries(cache) == 2 * 2 * 3 * 12


def test_reconstruction_is_zero_without_eviction(model):
    ids = chunks(n=2, length=30)
    reference = continuation_run(model, ids[:, :20], ids[:, 20:], None)
    assert reference.residual.shape == (2, 2, 10, SHAPE["hidden_size"])
    same = continuation_run(model, ids[:, :20], ids[:, 20:], KNormPress(compression_ratio=0.0, skip_layers=()))
    assert reconstruction_error(reference, same).abs().max() < 1e-4
    moved = continuation_run(model, ids[:, :20], ids[:, 20:], KNormPress(compression_ratio=0.5, skip_layers=()))
    assert (reconstruction_error(reference, moved) > 1e-4).all()


def test_learning_rate_schedule():
    lrs = [learning_rate(s, 100, 10, 1e-3, 1e-4) for s in range(100)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:])) and lrs[-1] == pytest.approx(1e-4, rel=1e-3)


class Interrupted(Exception):
    pass


def test_training_resumes_to_the_same_weights(tmp_path):
    corpus = pydoc_corpus(0.1)
    words = equal_length_words(corpus.words(), 6)
    train = {"steps": 4, "lr": 1e-3, "min_lr": 1e-4, "warmup": 1, "weight_decay": 0.1, "betas": [0.9, 0.95],
             "grad_clip": 1.0, "log_every": 1, "checkpoint_every": 2}
    stream = lambda: TrainingStream(corpus, words, seq_len=384, batch_size=2, seed=0)  # noqa: E731
    straight = train_model(SHAPE, train, stream(), tmp_path / "a", torch.device("cpu"), seed=0)
    broken = stream()
    calls = {"n": 0}
    original = broken.batch

    def failing_batch():
        calls["n"] += 1
        if calls["n"] == 3:
            raise Interrupted
        return original()

    broken.batch = failing_batch
    with pytest.raises(Interrupted):
        train_model(SHAPE, train, broken, tmp_path / "b", torch.device("cpu"), seed=0)
    assert (tmp_path / "b" / "resume" / "train.json").is_file()
    resumed = train_model(SHAPE, train, stream(), tmp_path / "b", torch.device("cpu"), seed=0)
    assert resumed["losses"] == straight["losses"]
    a, b = (load_model(tmp_path / k / "model", torch.device("cpu")) for k in "ab")
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.allclose(p, q, atol=1e-6), name
    assert train_model(SHAPE, train, stream(), tmp_path / "b", torch.device("cpu"), seed=0)["cached"]


def test_bootstrap_interval():
    values = np.random.default_rng(0).normal(1.0, 1.0, 400)
    low, high = bootstrap_ci(values)
    assert low < values.mean() < high and high - low == pytest.approx(2 * 1.96 / 20, rel=0.2)
    assert bootstrap_ci(values) == (low, high)


def _tables(full_accuracy):
    heads = pd.DataFrame([{"layer": l, "head": h, "rho_knorm": 0.3, "rho_qfilters": 0.4, "rho_ea": 0.5,
                           "alr_knorm": 1.0 + (l == 0), "alr_random": 3.0, "bos_min_norm": 1.0,
                           "bos_max_attention": 1.0, "bos_sink": 1.0} for l in range(3) for h in range(2)])
    filters = pd.DataFrame([{"layer": 0, "kv_head": 0, "mean_projection": -1.0}])
    ratios = [0.5, 0.75, 0.875, 0.9375]
    accuracy = {"full": full_accuracy, "knorm": 0.8, "knorm_skip01": 0.85, "random": 0.3, "keep_high": 0.1,
                "qfilters": 0.9, "expected_attention": 0.95}
    retrieval = pd.DataFrame([{"task": t, "method": m, "ratio": 0.0 if m == "full" else r, "query_aware": False,
                               "accuracy": a} for t in ("passkey", "niah") for m, a in accuracy.items()
                              for r in ([0.0] if m == "full" else ratios)])
    ppl = {"knorm": 2.0, "random": 3.0, "keep_high": 5.0, "qfilters": 1.9, "expected_attention": 1.95}
    streaming = pd.DataFrame([{"protocol": "budget", "method": m, "ratio": r, "window": w, "ppl_beyond_budget": p,
                               "full_ppl_beyond_budget": 1.95} for m, p in ppl.items() for r in ratios for w in (0, 16)])
    per_chunk = {f"{m}/{r}/0": np.full(20, math.log(p)) + np.random.default_rng(0).normal(0, 0.01, 20)
                 for m, p in ppl.items() for r in ratios}
    reconstruction = pd.DataFrame([{"method": m, "ratio": r, "error": e} for m, e in
                                   (("knorm", 1.0), ("expected_attention", 0.5)) for r in ratios])
    return heads, filters, streaming, per_chunk, retrieval, reconstruction


def test_claims_pass_on_tables_that_show_the_thesis_pattern_and_gate_retrieval_claims():
    settings = {"g0": {"min_accuracy": 0.9, "max_ppl": 4.0},
                "c1": {"from_layer": 1, "min_median_rho": 0.1, "min_positive_fraction": 0.7, "min_bos_fraction": 0.5},
                "c2": {"max_ppl_ratio": 1.05, "ratios": [0.5, 0.75, 0.875], "min_wins": 2},
                "c3": {"min_gap": 0.1, "ratios": [0.5, 0.75, 0.875, 0.9375], "min_wins": 2},
                "c4": {"min_head_fraction": 0.6, "window": 16, "ppl_ratios": [0.875, 0.9375], "min_gap": 0.05,
                       "acc_ratios": [0.75, 0.875, 0.9375], "min_wins": 2},
                "c5": {"min_gap": 0.05, "acc_ratios": [0.75, 0.875, 0.9375], "min_wins": 2,
                       "reconstruction_min_ratio": 0.5, "secondary_ratios": [0.875, 0.9375]}}
    good = {r["claim"]: r for r in evaluate_claims(settings, *_tables(1.0), full_ppl=2.0)}
    assert all(good[c]["verdict"] == "reproduced" for c in ("G0", "C1", "C2", "C3", "C4", "C5", "C6"))
    gated = {r["claim"]: r for r in evaluate_claims(settings, *_tables(0.5), full_ppl=2.0)}
    assert not gated["G0"]["passed"] and gated["G0"]["verdict"] == "not reproduced"
    assert gated["C3"]["verdict"] == gated["C5"]["verdict"] == "inconclusive" and GATE_NOTE in gated["C3"]["statement"]
    assert gated["C1"]["verdict"] == gated["C4"]["verdict"] == "reproduced"  # C4 passes on perplexity


def test_retrieval_prompts_must_stay_within_the_trained_length():
    from thesis.core.errors import ConfigError

    corpus = pydoc_corpus(0.1)
    words = equal_length_words(corpus.words(), 6)
    docs = {kind: evaluation_documents(kind, 8, 864, corpus, words, 0) for kind in ("passkey", "niah")}
    check_trained_length(docs, 1024)  # the configured context: the longest prompt fits
    longest = max(len(d.ids()) - 2 for task in docs.values() for d in task)
    assert longest <= 1024
    with pytest.raises(ConfigError, match="context_length"):
        check_trained_length(docs, longest - 1)

"""kv_mini recipe 2 and the additions to M2-M4: answer-weighted training loss, the future-attention
oracle of M4, KeyDiff in the press lists; each against an independent computation."""

import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from transformers import DynamicCache

from thesis.core.models import with_cache
from thesis.kvcache.mini.documents import IGNORE, PASSKEY_QUESTION, TrainingStream
from thesis.kvcache.mini.model import build_model
from thesis.kvcache.mini.reconstruction import reconstruction_error
from thesis.kvcache.mini.tokenizer import BOS, EOS
from thesis.kvcache.mini.train import weighted_loss
from thesis.kvcache.oracle import FutureAttentionPress, continuation_run

ROOT = Path(__file__).resolve().parents[2]
SHAPE = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
         "num_key_value_heads": 2, "head_dim": 8, "max_position_embeddings": 512}


@pytest.fixture(scope="module")
def model():
    return build_model(SHAPE, seed=0).eval()


def test_answer_weight_marks_exactly_the_answer_bytes(corpus, words):
    plain = TrainingStream(corpus, words, seq_len=512, batch_size=48, seed=3)
    weighted = TrainingStream(corpus, words, seq_len=512, batch_size=48, seed=3, answer_weight=10.0)
    ids, labels, ones = plain.batch()
    ids10, labels10, weights = weighted.batch()
    assert torch.equal(ids, ids10) and torch.equal(labels, labels10)  # weighting draws nothing
    assert torch.equal(ones, (labels != IGNORE).float())
    synthetic = 0
    for row, w in zip(ids.tolist(), weights):
        heavy = (w == 10.0).nonzero().flatten().tolist()
        if EOS not in row:
            assert not heavy and (w == 1).all()
            continue
        synthetic += 1
        end = row.index(EOS)
        # the answer: the digits between the question and EOS, nothing else weighs 10
        text = bytes(row[1:end])
        answer_start = 1 + len(text.rstrip(b"0123456789"))
        assert heavy == list(range(answer_start, end)) and len(heavy) in (5, 6)
        if len(heavy) == 5:
            assert text[:answer_start - 1].endswith(PASSKEY_QUESTION.encode())
        assert (w[end:][torch.tensor(row[end:]) != EOS] == 0).all() and w[end] == 1
    assert synthetic > 10
    with pytest.raises(ValueError, match="answer_weight"):
        TrainingStream(corpus, words, seq_len=512, batch_size=2, answer_weight=0.0)


def test_weight_one_is_the_models_own_loss(corpus, words, model):
    ids, labels, weights = TrainingStream(corpus, words, seq_len=384, batch_size=4, seed=1).batch()
    assert (labels == IGNORE).any()  # padded documents present, so the ignore mask matters
    with torch.no_grad():
        out = model(input_ids=ids, labels=labels)
    assert torch.allclose(weighted_loss(out.logits, labels, weights), out.loss, rtol=1e-6, atol=0)


def test_weighted_loss_by_hand():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 5, generator=generator)
    labels = torch.tensor([[9, 1, 4, IGNORE], [9, 0, 2, 3]])
    weights = torch.tensor([[7.0, 2.0, 0.5, 0.0], [7.0, 1.0, 1.0, 3.0]])
    total, norm = 0.0, 0.0
    for b in range(2):
        for t in range(3):
            target = int(labels[b, t + 1])
            if target == IGNORE:
                continue
            row = logits[b, t].tolist()
            nll = math.log(sum(math.exp(x) for x in row)) - row[target]
            total += float(weights[b, t + 1]) * nll
            norm += float(weights[b, t + 1])
    assert weighted_loss(logits, labels, weights).item() == pytest.approx(total / norm, rel=1e-6)


def _prefix_cache(model, prefix):
    cache = DynamicCache(config=model.config)
    with torch.no_grad():
        model(input_ids=prefix, **with_cache(model, cache))
    return cache


def _hand_oracle_scores(queries, keys, values, head_dim):
    """a_ti ||v_i|| averaged over the future queries t and the query heads of each KV head."""
    batch, heads, _, _ = queries.shape
    kv_heads = keys.shape[1]
    group = heads // kv_heads
    scores = torch.zeros(batch, kv_heads, keys.shape[2])
    for h in range(heads):
        kv = h // group
        logits = torch.einsum("bmd,bnd->bmn", queries[:, h].double(), keys[:, kv].double()) / math.sqrt(head_dim)
        scores[:, kv] += (logits.softmax(-1).mean(1) / group).float()
    return scores * values.float().norm(dim=-1)


def test_oracle_keeps_the_top_of_the_hand_computed_future_attention(model):
    ids = torch.randint(0, 256, (2, 48), generator=torch.Generator().manual_seed(4))
    ids[:, 0] = BOS
    prefix, continuation = ids[:, :36], ids[:, 36:]
    reference = continuation_run(model, prefix, continuation, None)
    queries = reference.queries
    assert [q.shape for q in queries] == [(2, 4, 12, 8)] * 2

    def oracle(ratio):
        return FutureAttentionPress(compression_ratio=ratio, future_queries=queries)

    assert reconstruction_error(reference, continuation_run(model, prefix, continuation,
                                                            oracle(0.0))).abs().max() < 1e-4
    full = _prefix_cache(model, prefix)
    with oracle(0.75)(model):
        pruned = _prefix_cache(model, prefix)
    for layer in range(SHAPE["num_hidden_layers"]):
        keys, values = full.layers[layer].keys, full.layers[layer].values
        scores = _hand_oracle_scores(queries[layer], keys, values, SHAPE["head_dim"])
        kept = pruned.layers[layer].keys
        assert kept.shape[2] == 9  # floor(36 x 0.25)
        for b in range(2):
            for kv in range(2):
                expected = sorted(scores[b, kv].topk(9).indices.tolist())
                assert torch.allclose(kept[b, kv], keys[b, kv, expected], atol=1e-6), (layer, b, kv)
    moved = continuation_run(model, prefix, continuation, oracle(0.75))
    assert (reconstruction_error(reference, moved) > 1e-4).all()


def test_keydiff_and_the_oracle_are_in_the_miniatures_lists():
    method = OmegaConf.load(ROOT / "configs" / "method" / "kv_mini.yaml")
    assert method.presses.keydiff._target_ == "thesis.kvcache.baselines.KeyDiffPress"
    assert "keydiff" in method.eval.streaming.methods and "keydiff" in method.eval.retrieval.methods
    assert "keydiff" in method.eval.reconstruction.methods and method.eval.reconstruction.oracle
    assert method.train.answer_weight == 1.0  # recipe 1 unchanged
    recipe2 = OmegaConf.load(ROOT / "configs" / "experiment" / "kv_mini_gpu_r2.yaml")
    assert "claims" not in recipe2.method  # the pre-registered thresholds stay those of method/kv_mini.yaml
    assert recipe2.method.train.answer_weight > 1 and "keydiff" in recipe2.method.eval.streaming.methods

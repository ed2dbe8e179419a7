"""Decoding under capture on the random-init miniature model: top-0 masking decodes exactly like no
capture, top-1 masks one key column per (step, layer, head) and stays finite; the running sink
statistics agree with a direct computation from full attention maps."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from thesis.sinks.capture import SinkCapture, explicit_attention
from thesis.sinks.decoding import autoregressive_generate, diffusion_generate
from thesis.sinks.detection import is_sink, key_scores
from thesis.sinks.mini.corpus import MASK, SynthReasoning
from thesis.sinks.mini.measure import SinkStats, decode, evaluate, rightmost_mask, spearman
from thesis.sinks.mini.model import build_model, logits_fn

SHAPE = OmegaConf.create({"hidden": 32, "layers": 2, "heads": 4, "ffn_mult": 2})
CORPUS = SynthReasoning(prompt_length=24, gen_length=16)
DECODERS = OmegaConf.create({"llada": {"kind": "diffusion", "block_length": 8, "shift": False},
                             "dream": {"kind": "diffusion", "block_length": 16, "shift": True},
                             "arm": {"kind": "autoregressive"}})


@pytest.fixture(scope="module")
def model():
    return build_model(SHAPE, CORPUS.seq_length, seed=0).eval()


@pytest.fixture(scope="module")
def prompts():
    return CORPUS.eval_set(3, 0)["A"][:, :CORPUS.prompt_length]


def plain(model, mode, prompts):
    fn = logits_fn(model, mode)
    if mode == "arm":
        return autoregressive_generate(fn, prompts, CORPUS.gen_length)[:, CORPUS.prompt_length:]
    decoder = DECODERS[mode]
    return diffusion_generate(fn, prompts, MASK, CORPUS.gen_length, decoder.block_length, CORPUS.gen_length,
                              decoder.shift)[:, CORPUS.prompt_length:]


@pytest.mark.parametrize("mode", ["llada", "dream", "arm"])
def test_top0_masking_decodes_like_no_capture(model, prompts, mode):
    capture = SinkCapture(keep=CORPUS.seq_length, topk=0)
    captured = decode(model, mode, DECODERS[mode], prompts, CORPUS.gen_length, CORPUS.gen_length, capture, {})
    assert torch.equal(captured, plain(model, mode, prompts))
    assert len(capture.records) == CORPUS.gen_length * SHAPE.layers


@pytest.mark.parametrize("mode", ["llada", "arm"])
def test_top1_masks_one_column_per_step_layer_head_and_stays_finite(model, prompts, mode):
    capture = SinkCapture(keep=1, topk=1)
    seen = {}
    response = decode(model, mode, DECODERS[mode], prompts, CORPUS.gen_length, CORPUS.gen_length, capture, seen)
    assert (response != MASK).all() and len(seen) == CORPUS.gen_length
    for record in capture.records:
        assert record.masked.shape[-1] == 1 and (record.masked >= 0).all()
    with SinkCapture(keep=1, topk=1):
        logits = logits_fn(model, mode)(seen[3])
    assert torch.isfinite(logits).all()


def test_stats_match_a_direct_computation_from_full_maps(model, prompts):
    """Prevalence and the eps sweep from kept scores equal Eq. 5.16 applied to explicit maps."""
    ids = torch.cat([prompts, torch.full((len(prompts), CORPUS.gen_length), MASK)], dim=1)
    maps = []
    original = torch.nn.functional.scaled_dot_product_attention

    def recording(q, k, v, attn_mask=None, **kw):
        maps.append(explicit_attention(q, k, attn_mask))
        return original(q, k, v, attn_mask=attn_mask, **kw)

    torch.nn.functional.scaled_dot_product_attention = recording
    try:
        with torch.no_grad():
            logits_fn(model, "llada")(ids)
    finally:
        torch.nn.functional.scaled_dot_product_attention = original
    scores = key_scores(torch.stack(maps))  # (layers, B, H, S)
    assert torch.allclose(scores.sum(-1), torch.full(scores.shape[:-1], float(ids.shape[1])), atol=1e-3)

    stats = SinkStats(SHAPE.layers, SHAPE.heads, 3.0, [0.0, 1.0, 3.0])
    capture = SinkCapture(keep=ids.shape[1], topk=0)
    with capture, torch.no_grad():
        capture.begin_step(0)
        logits_fn(model, "llada")(ids)
    stats.add(capture.records, {0: ids})
    summary = stats.summary()
    expected_prevalence = (is_sink(scores, 3.0).sum(-1) > 0).float().mean().item()
    assert summary["sink_prevalence"] == pytest.approx(expected_prevalence)
    for row, eps in zip(stats.sweep_rows("m"), (0.0, 1.0, 3.0)):
        assert row["non_sink_share"] == pytest.approx(1 - is_sink(scores, eps).float().mean().item())
    assert summary["token_share/mask"] == pytest.approx((ids == MASK).float().mean().item())


def test_rightmost_mask_and_spearman():
    ids = torch.tensor([[5, MASK, 6, MASK, 7], [5, 6, 7, 8, 9]])
    assert rightmost_mask(ids).tolist() == [3, -1]
    x = np.arange(10)
    assert spearman(x, x ** 3) == pytest.approx(1.0) and spearman(x, -x) == pytest.approx(-1.0)
    assert np.isnan(spearman(x, np.zeros(10)))


class OracleLM(torch.nn.Module):
    """Next-token logits that know the held-out sequences of one task only."""

    def __init__(self, sequences: torch.Tensor, vocab: int = 29):
        super().__init__()
        self.sequences, self.vocab = sequences, vocab

    def forward(self, input_ids, attention_mask=None, use_cache=False):
        logits = torch.zeros(*input_ids.shape, self.vocab)
        for row, ids in enumerate(input_ids):
            match = [s for s in self.sequences if torch.equal(s[:len(ids)], ids)]
            if match:
                logits[row, :-1] = torch.nn.functional.one_hot(match[0][1:len(ids)], self.vocab).float()
                logits[row, -1, match[0][len(ids)]] = 1.0
            else:
                logits[row, :, 7] = 1.0  # the digit 3, forever
        return SimpleNamespace(logits=logits)


def test_evaluate_counts_exact_matches_per_task():
    held = CORPUS.eval_set(5, 1)
    method = OmegaConf.create({"eval_batch": 4, "eps": 3.0, "score": "colsum", "require_eps": False,
                               "steps": CORPUS.gen_length})
    result = evaluate(OracleLM(held["A"]), "arm", DECODERS.arm, held, CORPUS.prompt_length, method, 0, None,
                      torch.device("cpu"))
    assert result == {"A": (5, 5), "B": (0, 5)}

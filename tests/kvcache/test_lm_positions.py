"""Per-position language-modelling metrics (thesis Figs. 4.3, 4.6, 4.10-4.13): the binned NLL averaged
with token-count weights equals the total, accuracy equals an argmax taken on a plain forward pass,
the bins on hand-made numbers, and the runner's position table against its score table."""

import math

import pandas as pd
import pytest
import torch

from thesis.core.experiment import execute
from thesis.kvcache.decoding import DecodingPress
from thesis.kvcache.knorm import KNormPress
from thesis.kvcache.tasks.cache_stats import CacheStats
from thesis.kvcache.tasks.perplexity import Scored, compressed_nll, position_rows
from thesis.kvcache.tasks.streaming_perplexity import streaming_nll

CONTEXT = 5


def scored_from(nll: list[list[float]], correct: list[list[bool]]) -> Scored:
    token_nll, token_correct = torch.tensor(nll), torch.tensor(correct)
    return Scored(float(token_nll.sum()), token_nll.numel(), CacheStats(0.0, 0, 0), token_nll, token_correct)


def test_bins_on_hand_made_numbers():
    # continuation positions 5..10 (context 5), bins of 4: [4, 8) holds 5, 6, 7; [8, 12) holds 8, 9, 10
    first = scored_from([[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]], [[True, False, True, False, False, True]])
    second = scored_from([[3.0, 2.0, 1.0, 0.0, 1.0, 2.0]], [[False, False, False, True, True, True]])
    rows = position_rows([first, second], CONTEXT, 4)
    assert [(r["position_bin"], r["position_end"], r["n_tokens"]) for r in rows] == [(4, 8, 6), (8, 12, 6)]
    assert rows[0]["nll"] == pytest.approx((1 + 2 + 3 + 3 + 2 + 1) / 6)
    assert rows[1]["nll"] == pytest.approx((4 + 5 + 6 + 0 + 1 + 2) / 6)
    assert rows[0]["accuracy"] == pytest.approx(2 / 6) and rows[1]["accuracy"] == pytest.approx(4 / 6)
    assert rows[1]["perplexity"] == pytest.approx(math.exp(3.0))
    assert rows[-1]["cumulative_perplexity"] == pytest.approx(math.exp(30 / 12))
    assert rows[-1]["cumulative_accuracy"] == pytest.approx(6 / 12)
    with pytest.raises(ValueError, match="bin_size"):
        position_rows([first], CONTEXT, 0)


@pytest.mark.parametrize("nll_of", [streaming_nll, compressed_nll])
@pytest.mark.parametrize("bin_size", [1, 7, 64])
def test_weighted_bins_equal_the_total(nll_of, bin_size, tiny_llama, prompt):
    press = DecodingPress(KNormPress(skip_layers=()), compression_interval=1, target_size=24,
                          hidden_states_buffer_size=8)
    ids = torch.cat([prompt[:, :60], prompt[:, 60:120]])
    scored = [nll_of(tiny_llama, ids, CONTEXT, press), nll_of(tiny_llama, prompt[:, :60], CONTEXT, None)]
    rows = position_rows(scored, CONTEXT, bin_size)
    total_tokens = sum(s.n_tokens for s in scored)
    assert sum(r["n_tokens"] for r in rows) == total_tokens
    weighted = sum(r["nll"] * r["n_tokens"] for r in rows) / total_tokens
    assert weighted == pytest.approx(sum(s.nll_sum for s in scored) / total_tokens, rel=1e-6)
    assert rows[-1]["cumulative_perplexity"] == pytest.approx(math.exp(weighted), rel=1e-6)
    correct = sum(int(s.token_correct.sum()) for s in scored)
    assert rows[-1]["cumulative_accuracy"] == pytest.approx(correct / total_tokens)


@pytest.mark.parametrize("nll_of", [streaming_nll, compressed_nll])
def test_accuracy_is_the_argmax_of_a_plain_forward(nll_of, tiny_llama, prompt):
    ids = prompt[:, :48]
    with torch.no_grad():
        logits = tiny_llama(input_ids=ids).logits[:, CONTEXT - 1:-1].double()
    targets = ids[:, CONTEXT:]
    expected_nll = torch.logsumexp(logits, dim=-1) - logits.gather(-1, targets[..., None])[..., 0]
    scored = nll_of(tiny_llama, ids, CONTEXT, None)
    assert torch.allclose(scored.token_nll.double(), expected_nll, atol=1e-4)
    top2 = logits.topk(2, dim=-1).values
    clear = (top2[..., 0] - top2[..., 1]) > 1e-4  # ties within float noise are left out
    assert torch.equal(scored.token_correct[clear], (logits.argmax(dim=-1) == targets)[clear])
    assert scored.nll_sum == pytest.approx(float(expected_nll.sum()), rel=1e-5)


def test_runner_writes_positions_consistent_with_scores(compose_experiment, tmp_path):
    name = "kv_knorm_lm_wikipedia"
    execute(compose_experiment(name), name, [f"experiment={name}", "scale=smoke"])
    (run_dir,) = (tmp_path / "outputs" / name).iterdir()
    scores = pd.read_csv(run_dir / "tables" / "scores.csv")
    positions = pd.read_csv(run_dir / "tables" / "positions.csv")
    assert {"press", "budget", "task", "position_bin", "nll", "accuracy", "n_tokens"} <= set(positions.columns)
    for (press, budget), part in positions.groupby(["press", "budget"]):
        total = scores[(scores.press == press) & (scores.budget == budget)].set_index("metric").value
        assert (part.nll * part.n_tokens).sum() / part.n_tokens.sum() == pytest.approx(total["nll"], rel=1e-6)
        assert (part.accuracy * part.n_tokens).sum() / part.n_tokens.sum() == pytest.approx(total["accuracy"])
    assert (run_dir / "figures" / "kv_knorm_lm_wikipedia_ppl.png").is_file()
    assert (run_dir / "figures" / "kv_knorm_lm_wikipedia_budget.png").is_file()

"""Eq. 5.16 on hand-built attention maps: known sinks, threshold edges, the `mean` reading."""

import math

import pytest
import torch

from thesis.core.errors import ConfigError
from thesis.sinks.detection import detect_sinks, is_sink, key_scores, main_sink_moves


def attention_with_sinks(n: int, sinks: dict[int, float]) -> torch.Tensor:
    """n x n rows summing to 1: each row gives weight w to each sink key, the rest uniformly."""
    rows = torch.zeros(n, n)
    rest = 1.0 - sum(sinks.values())
    others = [j for j in range(n) if j not in sinks]
    rows[:, others] = rest / len(others)
    for j, weight in sinks.items():
        rows[:, j] = weight
    return rows


def test_known_sinks_per_layer_and_head():
    n = 16
    maps = torch.stack([torch.stack([attention_with_sinks(n, {0: 0.5}), attention_with_sinks(n, {})]),
                        torch.stack([attention_with_sinks(n, {3: 0.4, 9: 0.4}), attention_with_sinks(n, {15: 0.1})])])
    flags = detect_sinks(maps, eps=3.0)
    assert flags.shape == (2, 2, n)
    assert flags[0, 0].nonzero().flatten().tolist() == [0]
    assert not flags[0, 1].any()
    assert flags[1, 0].nonzero().flatten().tolist() == [3, 9]
    assert not flags[1, 1].any()  # column sum 1.6 is not 3 above the others'


def test_threshold_is_strict_and_uses_the_others_mean():
    scores = torch.tensor([5.0, 1.0, 1.0, 1.0, 1.0])  # others' mean 1: 5 > 1 + 3
    assert is_sink(scores, 3.0).tolist() == [True, False, False, False, False]
    assert not is_sink(scores, 4.0).any()  # exactly at the threshold: not a sink
    assert is_sink(scores, 3.999).tolist()[0]


def test_mean_score_with_eps_3_finds_nothing_and_eps_over_s_matches_colsum():
    n = 32
    maps = torch.stack([attention_with_sinks(n, {0: 0.5}), attention_with_sinks(n, {4: 0.3, 20: 0.2}),
                        attention_with_sinks(n, {7: 0.12})])
    colsum = detect_sinks(maps, eps=3.0, score="colsum")
    assert colsum.any()
    assert not detect_sinks(maps, eps=3.0, score="mean").any()
    assert torch.equal(detect_sinks(maps, eps=3.0 / n, score="mean"), colsum)
    assert torch.allclose(key_scores(maps, "mean") * n, key_scores(maps, "colsum"))


def test_bad_inputs_are_refused():
    with pytest.raises(ConfigError, match="score"):
        key_scores(torch.ones(2, 2), "sum")
    with pytest.raises(ConfigError, match="2 keys"):
        is_sink(torch.ones(1), 3.0)


def test_main_sink_moves():
    moves = main_sink_moves([0, 0, 5, None, 5, 5])
    assert moves["move_rate"] == pytest.approx(1 / 3)  # (0,0) (0,5) (5,5) have both ends
    assert moves["appear_rate"] == pytest.approx(1 / 5)
    assert moves["vanish_rate"] == pytest.approx(1 / 5)
    assert math.isnan(main_sink_moves([None, None])["move_rate"])

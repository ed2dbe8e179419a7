"""Maps around sink events: kept only at the requested steps and heads, equal to an explicit attention
computation; sink events of a main-sink path; score histograms and the eps sweep on known scores."""

import math

import pytest
import torch

from thesis.core.errors import ConfigError
from thesis.sinks.analysis import main_sink_paths
from thesis.sinks.capture import LayerStats
from thesis.sinks.decoding import diffusion_generate
from thesis.sinks.move_maps import MoveMapCapture, sink_events
from thesis.sinks.score_summary import ScoreSummary, histogram

from .toy import ToyLM

MASK = 11


def toy_attention(model: ToyLM, ids: torch.Tensor) -> list[torch.Tensor]:
    """Each layer's (heads, S, S) attention of batch row 0, recomputed by hand from the toy's weights."""
    x = model.embed(ids) + model.position(torch.arange(ids.shape[1]))
    maps = []
    for qkv in model.qkv:
        q, k, v = (t.unflatten(-1, (model.heads, -1)).transpose(1, 2) for t in qkv(x).chunk(3, dim=-1))
        weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)
        maps.append(weights[0])
        x = x + (weights @ v).transpose(1, 2).flatten(2)
    return maps


def decode_toy(model, capture=None, seen=None):
    def on_step(step, ids):
        if capture is not None:
            capture.begin_step(step)
        if seen is not None:
            seen[step] = ids.clone()

    prompt = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8]])
    logits_of = lambda ids: model(ids)  # noqa: E731
    return diffusion_generate(logits_of, prompt, MASK, gen_length=8, block_length=4, steps=8, on_step=on_step)


@torch.no_grad()
def test_maps_are_kept_only_at_requested_steps_and_equal_explicit_attention():
    model = ToyLM(seed=3).eval()
    heads, steps = [(0, 1), (1, 0)], {2, 5}
    seen = {}
    with MoveMapCapture(heads=heads, map_steps=steps) as capture:
        ids = decode_toy(model, capture, seen)
    assert set(capture.maps) == {(s, layer, head) for s in steps for layer, head in heads}
    assert len(capture.maps) == 4
    assert set(capture.scores) == {(s, layer, head) for s in range(8) for layer, head in heads}
    for (step, layer, head), kept in capture.maps.items():
        expected = toy_attention(model, seen[step])[layer][head]
        assert kept.shape == (12, 12)
        assert torch.allclose(kept, expected, atol=1e-6)
        assert torch.allclose(capture.scores[(step, layer, head)], expected.sum(dim=0), atol=1e-5)
    assert torch.equal(ids, decode_toy(model))  # the capture leaves decoding unchanged


def test_sink_events_of_a_path():
    path = [None, 3, 3, 5, None, None, 2]
    assert sink_events(path) == [{"step": 0, "kind": "appear", "from": None, "to": 3},
                                 {"step": 2, "kind": "move", "from": 3, "to": 5},
                                 {"step": 3, "kind": "vanish", "from": 5, "to": None},
                                 {"step": 5, "kind": "appear", "from": None, "to": 2}]
    assert [e["step"] for e in sink_events(path, ["move"])] == [2]
    with pytest.raises(ConfigError, match="unknown"):
        sink_events(path, ["jump"])


def test_main_sink_paths_read_rank_zero_when_it_is_a_sink():
    def record(step, position, flag):
        positions = torch.tensor([[[position, 0]]])
        return LayerStats(step, 0, positions, torch.ones(1, 1, 2), torch.tensor([[[flag, False]]]),
                          torch.tensor([[int(flag)]]), positions[..., :0])

    paths = main_sink_paths([record(1, 7, False), record(0, 4, True), record(2, 9, True)])
    assert paths == {(0, 0): [4, None, 9]}


def test_histogram_counts_known_scores():
    scores = torch.tensor([[0.0, 0.5, 1.0, 1.99], [2.0, 3.9, 4.0, 10.0]])
    counts = histogram(scores, torch.tensor([0.0, 1.0, 2.0, 4.0]))
    assert counts.tolist() == [2, 2, 4]  # [0, 1), [1, 2), [2, 4) and everything above
    with pytest.raises(ConfigError, match="below the first histogram edge"):
        histogram(torch.tensor([-0.1]), torch.tensor([0.0, 1.0]))


def test_score_summary_histograms_per_step_and_eps_sweep():
    summary = ScoreSummary(torch.tensor([0.0, 1.0, 2.0, 8.0]), [0.0, 3.0, 5.0])
    summary.observe(0, 0, torch.tensor([[[4.0, 0.0, 0.0, 0.0]]]))  # key 0: 4 > 0 + eps for eps < 4
    summary.observe(0, 1, torch.tensor([[[1.0, 1.0, 1.0, 1.0]]]))  # uniform: no sink at any eps >= 0
    summary.observe(1, 0, torch.tensor([[[1.5, 0.5, 1.0, 1.0]]]))
    assert summary.step_counts[0].tolist() == [3, 4, 1]
    assert summary.step_counts[1].tolist() == [1, 3, 0]
    shares = {row["eps"]: row["non_sink_share"] for row in summary.sweep_rows()}
    assert shares == {0.0: 1 - 2 / 12, 3.0: 1 - 1 / 12, 5.0: 1.0}  # at eps 0: keys 0 of calls 1 and 3
    assert sum(row["count"] for row in summary.histogram_rows()) == 12

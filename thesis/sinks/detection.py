"""Sink detection (thesis Eq. 5.16) from attention probabilities, and sink trajectories over steps.

Score of key j: the attention it receives, either the column sum c_j = sum_i A_ij (`colsum`, the
default) or the column mean c_j / S (`mean`, the thesis's written normalisation). Token j is a sink
when its score exceeds the mean score of the other keys by more than eps (Eq. 5.16, "others"
averaged over S - 1 keys, kept literal). The thesis uses eps = 3; with the `mean` score every score
is at most 1, so eps = 3 can never pass and the criterion only makes sense on column sums (whose
mean is 1 when rows sum to 1). `mean` with eps / S selects the same tokens as `colsum` with eps; it
is kept so that the literal formula can be checked against the column-sum reading.
"""

from __future__ import annotations

from typing import Literal, Sequence

import torch

from thesis.core.errors import ConfigError

Score = Literal["colsum", "mean"]
SCORES = ("colsum", "mean")


def check_score(score: str) -> None:
    if score not in SCORES:
        raise ConfigError(f"sink score {score!r} is unknown: use one of {', '.join(SCORES)}")


def key_scores(attention: torch.Tensor, score: Score = "colsum") -> torch.Tensor:
    """Attention received by each key: (..., queries, keys) -> (..., keys)."""
    check_score(score)
    column_sums = attention.float().sum(dim=-2)
    return column_sums if score == "colsum" else column_sums / attention.shape[-2]


def is_sink(scores: torch.Tensor, eps: float) -> torch.Tensor:
    """Eq. 5.16 on scores (..., keys): score_j > mean over k != j of score_k + eps."""
    n_keys = scores.shape[-1]
    if n_keys < 2:
        raise ConfigError(f"sink detection needs at least 2 keys, got {n_keys}: use a longer sequence")
    others_mean = (scores.sum(dim=-1, keepdim=True) - scores) / (n_keys - 1)
    return scores > others_mean + eps


def detect_sinks(attention: torch.Tensor, eps: float = 3.0, score: Score = "colsum") -> torch.Tensor:
    """Boolean sink flags (..., keys) of attention probabilities (..., queries, keys), e.g. per
    (layer, head) for a (layers, heads, S, S) tensor."""
    return is_sink(key_scores(attention, score), eps)


def main_sink_moves(positions: Sequence[int | None]) -> dict[str, float]:
    """How the main sink of one (layer, head) moves over consecutive steps.

    `positions[t]` is the main sink's position at step t, or None when the step has no sink.
    Returns the fraction of consecutive step pairs (both with a sink) whose position changes
    (`move_rate`), and the fractions of pairs where a sink appears or vanishes (`appear_rate`,
    `vanish_rate`); NaN where no pair qualifies.
    """
    pairs = list(zip(positions[:-1], positions[1:]))
    both = [(a, b) for a, b in pairs if a is not None and b is not None]
    nan = float("nan")
    return {
        "move_rate": sum(a != b for a, b in both) / len(both) if both else nan,
        "appear_rate": sum(a is None and b is not None for a, b in pairs) / len(pairs) if pairs else nan,
        "vanish_rate": sum(a is not None and b is None for a, b in pairs) / len(pairs) if pairs else nan,
    }

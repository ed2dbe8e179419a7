"""The two task interfaces the runner dispatches on, and the sample a generation task yields.

A generation sample keeps its context and its question apart because the regimes of Chapter 4 differ
exactly there (spec 0): the context is prefilled under the press, the question is appended after
compression, uncompressed, and the answer is decoded greedily.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from torch import Tensor


@dataclass(frozen=True)
class Sample:
    """One prompt of a generation task and its references; `subset` names the benchmark's sub-task
    (RULER task, LongBench dataset), reported separately."""

    id: str
    context: str
    question: str
    answers: tuple[str, ...]
    answer_prefix: str = ""
    max_new_tokens: int = 32
    subset: str = ""
    meta: Mapping[str, Any] = field(default_factory=dict)


class GenerationTask:
    """Samples answered by greedy decoding, each scored by `score` (metric name -> value in [0, 1])."""

    name: str

    def samples(self, tokenizer: Any) -> list[Sample]:
        raise NotImplementedError

    def score(self, prediction: str, sample: Sample) -> dict[str, float]:
        raise NotImplementedError


class PerplexityTask:
    """Token sequences (1, context_length + continuation) whose continuation is scored."""

    name: str
    context_length: int

    def sequences(self, tokenizer: Any) -> list[Tensor]:
        raise NotImplementedError

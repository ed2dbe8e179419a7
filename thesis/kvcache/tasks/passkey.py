"""Passkey retrieval (thesis 4.1 Figs. 4.4b/4.15b/4.19-4.20), generated in the landmark-attention format.

The prompt follows spec A.2: the task line, the filler repeated, the pass-key line hidden at some
depth, then "What is the pass key? The pass key is" (appended after compression). Lengths are in
tokens here (the original counts filler characters). Each (length, sample index) draws its key
uniformly in [1, 50000] and, unless depths are given, its depth uniformly, from
`seed + sample index`, so samples are reproducible one by one. A sample is correct when the first
number of the greedy answer is the key (the original compares the first generated token ids).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from thesis.kvcache.tasks.base import GenerationTask, Sample
from thesis.kvcache.tasks.haystack import FILLER, fill, insert_at_depth
from thesis.kvcache.tasks.metrics import first_integer

TASK_LINE = ("There is an important info hidden inside a lot of irrelevant text. Find it and memorize them. "
             "I will quiz you about the important information there.")


class PasskeyTask(GenerationTask):
    def __init__(self, context_lengths: Sequence[int], samples_per_length: int = 10, name: str = "passkey",
                 depths_percent: Sequence[float] | None = None, max_new_tokens: int = 8, seed: int = 0) -> None:
        self.name, self.context_lengths, self.samples_per_length = name, list(context_lengths), samples_per_length
        self.depths_percent = None if depths_percent is None else list(depths_percent)
        self.max_new_tokens, self.seed = max_new_tokens, seed

    def _draws(self, index: int) -> list[tuple[int, float]]:
        """(key, depth in [0, 1]) of sample `index`, one per requested depth (one random when None)."""
        rng = np.random.default_rng(self.seed + index)
        key = int(rng.integers(1, 50001))
        if self.depths_percent is None:
            return [(key, float(rng.uniform()))]
        return [(key, depth / 100) for depth in self.depths_percent]

    def samples(self, tokenizer: Any) -> list[Sample]:
        task_tokens = len(tokenizer(TASK_LINE, add_special_tokens=False).input_ids)
        samples = []
        for length in self.context_lengths:
            for index in range(self.samples_per_length):
                for key, depth in self._draws(index):
                    info = f"The pass key is {key}. Remember it. {key} is the pass key."
                    info_tokens = len(tokenizer(" " + info, add_special_tokens=False).input_ids)
                    haystack = fill(tokenizer, list(FILLER), length - task_tokens - info_tokens)
                    text, before = insert_at_depth(tokenizer, haystack, info, depth)
                    samples.append(Sample(
                        id=f"{self.name}/{length}/{index}/{depth:.3f}", context=f"{TASK_LINE} {text}",
                        question=" What is the pass key? The pass key is", answers=(str(key),),
                        max_new_tokens=self.max_new_tokens,
                        meta={"context_length": length, "depth": depth, "key": key, "tokens_before_key": before}))
        return samples

    def score(self, prediction: str, sample: Sample) -> dict[str, float]:
        return {"accuracy": float(first_integer(prediction) == int(sample.answers[0]))}

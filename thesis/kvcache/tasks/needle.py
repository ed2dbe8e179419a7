"""Needle in a haystack (thesis 4.1 Figs. 4.4a/4.15-4.18, 4.2 Fig. 4.36, 4.3 Fig. 4.43), generated.

One sample per (context length in tokens, depth in percent): the haystack (Paul Graham essays at
paper scale, the filler offline) is cut to the length, the needle inserted at the depth
(`haystack.py`), and the book prompt of spec A.2 wraps it. The question comes after the context,
so it is not compressed (query-agnostic) unless the runner is told otherwise. The seed picks the
sentence the haystack starts from. Scores: ROUGE-1 F between the needle and the answer with
kvpress's scorer (`rouge-score`, stemmed; spec A.2 reports it x 10, here in [0, 1]), unigram F1
(SQuAD normalisation, no stemming), whether the needle's answer phrase is contained, and exact match.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from thesis.kvcache.tasks.base import GenerationTask, Sample
from thesis.kvcache.tasks.haystack import fill, insert_at_depth, sentences_of
from thesis.kvcache.tasks.metrics import contains_any, exact_match, rouge_1, token_f1

NEEDLE = "The best thing to do in San Francisco is eat a sandwich and sit in Dolores Park on a sunny day."
QUESTION = "What is the best thing to do in San Francisco?"
ANSWER_PHRASE = "eat a sandwich and sit in Dolores Park on a sunny day"


class NeedleTask(GenerationTask):
    def __init__(self, context_lengths: Sequence[int], depths_percent: Sequence[float], name: str = "needle",
                 haystack_path: str | Path | None = None, needle: str = NEEDLE, question: str = QUESTION,
                 answer_phrase: str = ANSWER_PHRASE, max_new_tokens: int = 32, seed: int = 0) -> None:
        self.name, self.context_lengths, self.depths_percent = name, list(context_lengths), list(depths_percent)
        self.haystack_path, self.needle, self.question = haystack_path, needle, question
        self.answer_phrase, self.max_new_tokens, self.seed = answer_phrase, max_new_tokens, seed

    def samples(self, tokenizer: Any) -> list[Sample]:
        sentences = sentences_of(self.haystack_path)
        start = int(np.random.default_rng(self.seed).integers(len(sentences)))
        needle_tokens = len(tokenizer(" " + self.needle, add_special_tokens=False).input_ids)
        samples = []
        for length in self.context_lengths:
            haystack = fill(tokenizer, sentences, length - needle_tokens, start)
            for depth in self.depths_percent:
                text, before = insert_at_depth(tokenizer, haystack, self.needle, depth / 100)
                samples.append(Sample(
                    id=f"{self.name}/{length}/{depth:g}", context=f"This is a very long story book: <book> {text} </book>.",
                    question=f"\n Based on the content of the book, Question: {self.question}\nAnswer:",
                    answers=(self.needle,), max_new_tokens=self.max_new_tokens,
                    meta={"context_length": length, "depth_percent": depth, "tokens_before_needle": before}))
        return samples

    def score(self, prediction: str, sample: Sample) -> dict[str, float]:
        return {"rouge1": rouge_1(prediction, sample.answers),
                "token_f1": token_f1(prediction, sample.answers),
                "contains_answer": contains_any(prediction, [self.answer_phrase]),
                "exact_match": exact_match(prediction, sample.answers)}

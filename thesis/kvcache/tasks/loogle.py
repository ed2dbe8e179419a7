"""LooGLE short-dependency QA (Q-Filters paper Fig. 7b = thesis Fig. 4.37b) from its published JSONL.

Layout: `<root>/<subset>.jsonl` (`shortdep_qa`, `shortdep_cloze`, `longdep_qa`), the files of the
bigainlco/LooGLE dataset. Each record is one document: `input` (the text), `title`, `qa_pairs`
(a list of {"Q", "A", "S"}: question, answer, evidence sentences; published either as a list or
as its text) and `output`. Every question becomes one sample whose context is its document.
Scores: unigram F1 and whether the answer is contained.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from thesis.core.errors import DataNotFoundError
from thesis.kvcache.tasks.base import GenerationTask, Sample
from thesis.kvcache.tasks.files import first_n, read_jsonl
from thesis.kvcache.tasks.metrics import contains_any, token_f1

HOW_TO_GET = "download the bigainlco/LooGLE dataset's JSONL files so that <root>/<subset>.jsonl exists"


def qa_pairs(value: Any, where: str) -> list[dict[str, Any]]:
    """The list of question/answer dicts, whether stored as a list or as its JSON / Python text."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            try:
                value = ast.literal_eval(value)
            except (ValueError, SyntaxError):
                value = None
    if not isinstance(value, list) or not all(isinstance(p, dict) and {"Q", "A"} <= set(p) for p in value):
        raise DataNotFoundError(f"{where}: qa_pairs is not a list of {{'Q', 'A', 'S'}} entries "
                                f"(summarization subsets have none): {HOW_TO_GET}")
    return value


class LoogleTask(GenerationTask):
    def __init__(self, root: str | Path, subsets: Sequence[str] = ("shortdep_qa",), name: str = "loogle",
                 limit: int | None = None, max_new_tokens: int = 64) -> None:
        self.root, self.subsets, self.name = Path(root), list(subsets), name
        self.limit, self.max_new_tokens = limit, max_new_tokens

    def samples(self, tokenizer: Any) -> list[Sample]:
        samples = []
        for subset in self.subsets:
            path = self.root / f"{subset}.jsonl"
            questions = []
            for number, record in enumerate(read_jsonl(path, ("input", "qa_pairs"), HOW_TO_GET)):
                for k, pair in enumerate(qa_pairs(record["qa_pairs"], f"{path}:{number + 1}")):
                    questions.append(Sample(
                        id=f"{subset}/{record.get('title', number)}/{k}", context=record["input"],
                        question=f"\n\nQuestion: {pair['Q']}", answers=(str(pair["A"]),), answer_prefix="\nAnswer:",
                        max_new_tokens=self.max_new_tokens, subset=subset))
            samples.extend(first_n(questions, self.limit))
        return samples

    def score(self, prediction: str, sample: Sample) -> dict[str, float]:
        return {"token_f1": token_f1(prediction, sample.answers),
                "contains_answer": contains_any(prediction, sample.answers)}

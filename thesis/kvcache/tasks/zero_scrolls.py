"""Zero-SCROLLS (supported by kvpress, unused in Chapter 4: spec I) from its published JSONL.

Layout: `<root>/<dataset>/validation.jsonl` of the tau/zero_scrolls dataset (the test files carry
no references). Each record holds `id`, `pid`, `input` (instructions, document, query, answer
cue), `output` and the character offsets `document_start_index`, `document_end_index`,
`query_start_index`, `query_end_index`. Everything up to the end of the document is the context
(compressed); the rest of the input is the question. Scores: unigram F1 and exact match (the
official per-dataset metrics, Rouge and others, are not reproduced).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from thesis.core.errors import DataNotFoundError
from thesis.kvcache.tasks.base import GenerationTask, Sample
from thesis.kvcache.tasks.files import first_n, read_jsonl
from thesis.kvcache.tasks.metrics import exact_match, token_f1

HOW_TO_GET = ("download the tau/zero_scrolls dataset's files so that <root>/<dataset>/validation.jsonl exists "
              "(the test split has no outputs)")


class ZeroScrollsTask(GenerationTask):
    def __init__(self, root: str | Path, datasets: Sequence[str], name: str = "zero_scrolls",
                 limit: int | None = None, max_new_tokens: int = 64) -> None:
        self.root, self.datasets, self.name = Path(root), list(datasets), name
        self.limit, self.max_new_tokens = limit, max_new_tokens

    def samples(self, tokenizer: Any) -> list[Sample]:
        samples = []
        for dataset in self.datasets:
            path = self.root / dataset / "validation.jsonl"
            records = read_jsonl(path, ("id", "input", "output", "document_end_index"), HOW_TO_GET)
            for record in first_n(records, self.limit):
                if record["output"] is None:
                    raise DataNotFoundError(f"{path}: record {record['id']} has no output: {HOW_TO_GET}")
                end = record["document_end_index"]
                samples.append(Sample(
                    id=f"{dataset}/{record['id']}", context=record["input"][:end], question=record["input"][end:],
                    answers=(record["output"],), max_new_tokens=self.max_new_tokens, subset=dataset))
        return samples

    def score(self, prediction: str, sample: Sample) -> dict[str, float]:
        return {"token_f1": token_f1(prediction, sample.answers),
                "exact_match": exact_match(prediction, sample.answers)}

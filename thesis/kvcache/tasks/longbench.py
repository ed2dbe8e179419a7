"""LongBench (thesis 4.1 Figs. 4.5/4.21-4.22, 4.3 Fig. 4.42/Table 4.5) read from its published JSONL.

Layout: `<root>/<dataset>.jsonl`, the files of `data.zip` in the THUDM/LongBench dataset
repository. Each record holds `input` (the question; empty for summaries), `context`, `answers`,
`all_classes`, `length`, `dataset`, `language` and `_id`. The context is compressed; the question
follows as "Question: ... Answer:" (LongBench's per-dataset instruction templates are not
reproduced, see the README).
Scores, per dataset family of LongBench's evaluation: unigram F1 for QA, the class / paragraph
number match for classification and retrieval, difflib's similarity of the first code line for
code, Rouge-L F (the `rouge` package, as LongBench's scorer) for summaries.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Callable

from thesis.kvcache.tasks.base import GenerationTask, Sample
from thesis.kvcache.tasks.files import first_n, read_jsonl
from thesis.kvcache.tasks.metrics import first_integer, rouge_l, token_f1


def class_match(prediction: str, sample: Sample) -> float:
    """1 / (number of classes named in the prediction) if the right one is among them, else 0."""
    named = [c for c in sample.meta["all_classes"] if c in prediction]
    return 1 / len(named) if any(answer in named for answer in sample.answers) else 0.0


def number_match(prediction: str, sample: Sample) -> float:
    """Fraction of the numbers in the prediction that equal the reference's number."""
    numbers = re.findall(r"\d+", prediction)
    expected = first_integer(sample.answers[0])
    return sum(int(n) == expected for n in numbers) / len(numbers) if numbers else 0.0


def code_similarity(prediction: str, sample: Sample) -> float:
    """Similarity of the first non-comment line of the prediction to the reference."""
    lines = [line for line in prediction.lstrip("\n").split("\n") if not line.lstrip().startswith(("#", "//", "`"))]
    first = lines[0] if lines else ""
    return max(difflib.SequenceMatcher(None, first, ref).ratio() for ref in sample.answers)


def qa_f1(prediction: str, sample: Sample) -> float:
    return token_f1(prediction, sample.answers)


def summary_rouge(prediction: str, sample: Sample) -> float:
    return rouge_l(prediction, sample.answers)


METRICS: dict[str, tuple[str, Callable[[str, Sample], float]]] = {
    **{name: ("qa_f1", qa_f1) for name in ("narrativeqa", "qasper", "multifieldqa_en", "hotpotqa", "2wikimqa",
                                           "musique", "triviaqa")},
    **{name: ("rouge_l", summary_rouge) for name in ("gov_report", "qmsum", "multi_news", "samsum")},
    "trec": ("classification", class_match),
    "passage_count": ("count", number_match),
    "passage_retrieval_en": ("retrieval", number_match),
    "lcc": ("edit_similarity", code_similarity),
    "repobench-p": ("edit_similarity", code_similarity),
}

HOW_TO_GET = ("download data.zip of the THUDM/LongBench dataset repository and unzip it so that "
              "<root>/<dataset>.jsonl exists")


class LongBenchTask(GenerationTask):
    def __init__(self, root: str | Path, datasets: Sequence[str], max_new_tokens: Mapping[str, int],
                 name: str = "longbench", limit: int | None = None) -> None:
        unknown = [d for d in datasets if d not in METRICS or d not in max_new_tokens]
        if unknown:
            raise ValueError(f"LongBench datasets {unknown} have no metric or no max_new_tokens here; "
                             f"English datasets with a metric: {', '.join(METRICS)}.")
        self.root, self.datasets, self.max_new_tokens = Path(root), list(datasets), dict(max_new_tokens)
        self.name, self.limit = name, limit

    def samples(self, tokenizer: Any) -> list[Sample]:
        samples = []
        for dataset in self.datasets:
            records = read_jsonl(self.root / f"{dataset}.jsonl", ("input", "context", "answers"), HOW_TO_GET)
            for number, record in enumerate(first_n(records, self.limit)):
                question = f"\n\nQuestion: {record['input']}" if record["input"] else ""
                samples.append(Sample(
                    id=f"{dataset}/{record.get('_id', number)}", context=record["context"], question=question,
                    answers=tuple(record["answers"]), answer_prefix="\nAnswer:",
                    max_new_tokens=self.max_new_tokens[dataset], subset=dataset,
                    meta={"all_classes": record.get("all_classes") or []}))
        return samples

    def score(self, prediction: str, sample: Sample) -> dict[str, float]:
        metric, compute = METRICS[sample.subset]
        return {metric: compute(prediction, sample)}

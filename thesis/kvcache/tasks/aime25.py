r"""AIME25 (thesis 4.3, Fig. 4.44: decoding under compression) from its published JSON Lines.

Two hub layouts are read: math-ai/aime25 (`test.jsonl`, fields `problem`, `answer`, `id`) and
opencompass/AIME2025 (`aime2025-I.jsonl`, `aime2025-II.jsonl`, fields `question`, `answer`); `files`
names the files under `root`. The problem is the context and the MATH-500 instruction to reason and
box the answer follows it, as in `math500.py`. Score: the last `\boxed{}` of the generation against
`answer` after the MATH-500 normalisation (spaces, `$`, a trailing period dropped); AIME answers are
integers 0-999, so two integers are also equal when their values are ("033" = "33").
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Sequence

from thesis.core.errors import DataNotFoundError
from thesis.kvcache.tasks.base import GenerationTask, Sample
from thesis.kvcache.tasks.files import first_n, read_jsonl
from thesis.kvcache.tasks.math500 import INSTRUCTION
from thesis.kvcache.tasks.metrics import last_boxed, same_math_answer

HOW_TO_GET = ("download math-ai/aime25's test.jsonl (or opencompass/AIME2025's aime2025-I.jsonl and "
              "aime2025-II.jsonl, with `files=[...]`) into <root>/")
PROBLEM_FIELDS = ("problem", "question")
_INTEGER = re.compile(r"[+-]?\d+")


def same_integer_or_math_answer(predicted: str | None, reference: str) -> float:
    """MATH-500's comparison, or equal integer values when both answers are integers."""
    if predicted is None:
        return 0.0
    left, right = re.sub(r"\s+|\$", "", predicted).rstrip("."), re.sub(r"\s+|\$", "", reference).rstrip(".")
    if _INTEGER.fullmatch(left) and _INTEGER.fullmatch(right):
        return float(int(left) == int(right))
    return same_math_answer(predicted, reference)


class Aime25Task(GenerationTask):
    def __init__(self, root: str | Path, name: str = "aime25", files: Sequence[str] = ("test.jsonl",),
                 limit: int | None = None, max_new_tokens: int = 32768) -> None:
        self.root, self.name, self.files = Path(root), name, tuple(files)
        self.limit, self.max_new_tokens = limit, max_new_tokens

    def samples(self, tokenizer: Any) -> list[Sample]:
        samples = []
        for file in self.files:
            for number, record in enumerate(read_jsonl(self.root / file, ("answer",), HOW_TO_GET)):
                problem = next((record[key] for key in PROBLEM_FIELDS if key in record), None)
                if problem is None:
                    raise DataNotFoundError(f"{self.root / file}: record {number + 1} has neither `problem` nor "
                                            f"`question`: {HOW_TO_GET}")
                sample_id = str(record.get("id", f"{Path(file).stem}/{number}"))
                samples.append(Sample(id=sample_id, context=problem, question=INSTRUCTION,
                                      answers=(str(record["answer"]),), max_new_tokens=self.max_new_tokens))
        return first_n(samples, self.limit)

    def score(self, prediction: str, sample: Sample) -> dict[str, float]:
        return {"accuracy": same_integer_or_math_answer(last_boxed(prediction), sample.answers[0])}

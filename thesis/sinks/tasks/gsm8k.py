"""GSM8K as the thesis scores it with lm-evaluation-harness: n-shot "Question: / Answer:" prompts
built from the training split, the final number of a generation extracted either strictly (after
"#### ", the format the few-shot answers teach) or flexibly (the last number in the text), and
exact match against the number after "#### " in the reference answer."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from thesis.sinks.tasks.records import read_records

HOW_TO_GET = ("GSM8K ships as grade-school-math/data/{train,test}.jsonl (github.com/openai/grade-school-math) "
              "or as main/{train,test}-00000-of-00001.parquet (huggingface.co/datasets/openai/gsm8k); "
              "point data.test / data.train at the files")
STRICT = re.compile(r"#### (\-?[0-9\.\,]+)")
FLEXIBLE = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")
#: lm-eval's stop strings for the gsm8k task: the model starts the next few-shot question
STOP = ("Question:", "</s>", "<|im_end|>")


@dataclass(frozen=True)
class Problem:
    question: str
    answer: str  # the full worked solution, ending in "#### <number>"

    @property
    def target(self) -> str:
        return normalise(self.answer.split("####")[-1])


def read_gsm8k(path: str | Path) -> list[Problem]:
    return [Problem(str(r["question"]), str(r["answer"])) for r in read_records(path, ("question", "answer"), HOW_TO_GET)]


def normalise(number: str) -> str:
    """"$1,234." -> "1234": the separators, currency sign and trailing full stop lm-eval ignores."""
    return number.strip().replace(",", "").replace("$", "").rstrip(".")


def extract(generation: str, mode: str = "flexible") -> str | None:
    """The answer a generation gives; None when it gives none. `strict`: the first "#### <number>";
    `flexible`: the last number anywhere."""
    if mode == "strict":
        found = STRICT.search(generation)
        return normalise(found.group(1)) if found else None
    if mode != "flexible":
        raise ValueError(f"extraction mode {mode!r} is unknown: use strict or flexible")
    matches = FLEXIBLE.findall(generation)
    if not matches:
        return None
    return normalise(next(group for group in matches[-1] if group))


def truncate(generation: str, stops: tuple[str, ...] = STOP) -> str:
    """The generation up to the first stop string."""
    cut = min((generation.find(s) for s in stops if s in generation), default=len(generation))
    return generation[:cut]


def fewshot_prompt(problem: Problem, shots: list[Problem]) -> str:
    demos = "".join(f"Question: {s.question}\nAnswer: {s.answer}\n\n" for s in shots)
    return f"{demos}Question: {problem.question}\nAnswer:"


def is_correct(problem: Problem, generation: str, mode: str = "flexible") -> bool:
    return extract(truncate(generation), mode) == problem.target

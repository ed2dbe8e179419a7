"""Offline fixtures of the Table 5.8 benchmarks in their published layouts: GSM8K as the original
release's JSON Lines and as the Hugging Face mirror's Parquet, HumanEval as the release's gzipped
JSON Lines and as the mirror's Parquet. A handful of hand-written problems each, with answers and
tests that really check them."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from thesis.core.fixtures import fixture

GSM8K_PROBLEMS = (
    ("Tom has 3 apples and buys 4 more. How many apples does he have?",
     "He has 3 + 4 = <<3+4=7>>7 apples.\n#### 7"),
    ("A box holds 12 pens. How many pens are in 5 boxes?",
     "There are 12 * 5 = <<12*5=60>>60 pens.\n#### 60"),
    ("Mia had $1,250 and spent $250. How much money is left?",
     "She has 1250 - 250 = <<1250-250=1000>>1000 dollars left.\n#### 1,000"),
    ("A train travels 60 km per hour for 3 hours. How far does it go?",
     "It goes 60 * 3 = <<60*3=180>>180 km.\n#### 180"),
    ("Sam splits 20 sweets among 4 friends equally. How many does each get?",
     "Each gets 20 / 4 = <<20/4=5>>5 sweets.\n#### 5"),
    ("The temperature was 5 degrees and fell by 8 degrees. What is it now?",
     "It is 5 - 8 = <<5-8=-3>>-3 degrees.\n#### -3"),
)

HUMANEVAL_PROBLEMS = (
    ("HumanEval/0", "add", "def add(a: int, b: int) -> int:\n    \"\"\"Return the sum of a and b.\"\"\"\n",
     "    return a + b\n",
     "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n"),
    ("HumanEval/1", "reverse_words",
     "def reverse_words(text: str) -> str:\n    \"\"\"Reverse the order of the words of text.\"\"\"\n",
     "    return ' '.join(reversed(text.split()))\n",
     "def check(candidate):\n    assert candidate('a b c') == 'c b a'\n    assert candidate('x') == 'x'\n"),
    ("HumanEval/2", "count_evens",
     "def count_evens(values: list) -> int:\n    \"\"\"Count the even numbers in values.\"\"\"\n",
     "    return sum(1 for v in values if v % 2 == 0)\n",
     "def check(candidate):\n    assert candidate([1, 2, 4]) == 2\n    assert candidate([]) == 0\n"),
)


def _jsonl(path: Path, rows: list[dict], compress: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(row) + "\n" for row in rows)
    if compress:
        with gzip.open(path, "wt", encoding="utf-8") as out:
            out.write(text)
    else:
        path.write_text(text, encoding="utf-8")


def _parquet(path: Path, rows: list[dict]) -> None:
    import pandas as pd

    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(path, index=False)


@fixture("gsm8k_tiny")
def gsm8k_tiny(out: Path) -> None:
    """`grade-school-math/data/{train,test}.jsonl` and `main/{train,test}-00000-of-00001.parquet`:
    two training problems (the few-shot pool) and four test problems."""
    rows = [{"question": q, "answer": a} for q, a in GSM8K_PROBLEMS]
    for split, part in (("train", rows[:2]), ("test", rows[2:])):
        _jsonl(out / "grade-school-math" / "data" / f"{split}.jsonl", part)
        _parquet(out / "main" / f"{split}-00000-of-00001.parquet", part)


@fixture("humaneval_tiny")
def humaneval_tiny(out: Path) -> None:
    """`data/HumanEval.jsonl.gz` and `openai_humaneval/test-00000-of-00001.parquet`, three problems."""
    rows = [{"task_id": t, "prompt": p, "canonical_solution": s, "test": c, "entry_point": e}
            for t, e, p, s, c in HUMANEVAL_PROBLEMS]
    _jsonl(out / "data" / "HumanEval.jsonl.gz", rows, compress=True)
    _parquet(out / "openai_humaneval" / "test-00000-of-00001.parquet", rows)

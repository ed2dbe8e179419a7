r"""MATH-500 (thesis 4.3 Fig. 4.44/Table 4.4) from its published JSONL.

Layout: `<root>/test.jsonl` of the HuggingFaceH4/MATH-500 dataset; each record holds `problem`,
`solution`, `answer`, `subject`, `level` and `unique_id`. The problem is the context; the
instruction to reason and box the final answer follows it. Score: accuracy of the last
`\boxed{}` of the generation against `answer` (spec C.3), compared after dropping spaces and `$`.
The thesis compresses these generations during decoding (every 512 steps): that regime, with the
final cache measured, is `thesis.kvcache.decoding_eval` (`kv_ea_math500`); under `evaluate_presses`
this reader runs in the prefill regime, where only the problem is compressed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from thesis.kvcache.tasks.base import GenerationTask, Sample
from thesis.kvcache.tasks.files import first_n, read_jsonl
from thesis.kvcache.tasks.metrics import last_boxed, same_math_answer

HOW_TO_GET = "download the HuggingFaceH4/MATH-500 dataset's test.jsonl into <root>/"
INSTRUCTION = "\nPlease reason step by step, and put your final answer within \\boxed{}."


class Math500Task(GenerationTask):
    def __init__(self, root: str | Path, name: str = "math500", limit: int | None = None,
                 max_new_tokens: int = 4096) -> None:
        self.root, self.name, self.limit, self.max_new_tokens = Path(root), name, limit, max_new_tokens

    def samples(self, tokenizer: Any) -> list[Sample]:
        records = read_jsonl(self.root / "test.jsonl", ("problem", "answer"), HOW_TO_GET)
        return [Sample(id=str(record.get("unique_id", number)), context=record["problem"], question=INSTRUCTION,
                       answers=(record["answer"],), max_new_tokens=self.max_new_tokens)
                for number, record in enumerate(first_n(records, self.limit))]

    def score(self, prediction: str, sample: Sample) -> dict[str, float]:
        return {"accuracy": same_math_answer(last_boxed(prediction), sample.answers[0])}

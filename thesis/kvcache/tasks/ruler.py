"""RULER (thesis 4.2 Fig. 4.31b/Table 4.1, 4.3 Table 4.3) read from the files RULER's generator writes.

Layout: `<root>/<task>/validation.jsonl`, written by `scripts/data/prepare.py --save_dir <root>
--task <task> --max_seq_length <length>` of github.com/NVIDIA/RULER (one root per length). Each
record holds `index`, `input` (instructions, context and question), `outputs` (references),
`length` and `answer_prefix`. Every RULER template ends its input with the question on its own
last line, so the text up to the last newline is the context (compressed) and the rest the
question (appended after compression, as kvpress's copy of RULER keeps them apart).
Score (spec C.3): string match, for `qa*` tasks whether any reference is contained, otherwise the
fraction of references contained. Answer lengths per task family follow spec D.0; `max_new_tokens`
overrides some of them (a smoke run needs a few tokens, not 128).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from thesis.core.errors import DataNotFoundError
from thesis.kvcache.tasks.base import GenerationTask, Sample
from thesis.kvcache.tasks.files import first_n, read_jsonl
from thesis.kvcache.tasks.metrics import contains_any, contains_fraction

#: max_new_tokens per task family (kvpress's RULER settings, spec D.0)
MAX_NEW_TOKENS = {"niah": 128, "vt": 30, "cwe": 120, "fwe": 50, "qa": 32}


def how_to_get(root: Path) -> str:
    return (f"generate RULER with `python scripts/data/prepare.py --save_dir {root} --task <task> "
            "--max_seq_length <length> ...` from github.com/NVIDIA/RULER, giving <root>/<task>/validation.jsonl")


def family(task: str) -> str:
    return next((prefix for prefix in MAX_NEW_TOKENS if task.startswith(prefix)), task)


class RulerTask(GenerationTask):
    def __init__(self, root: str | Path, tasks: Sequence[str] | None = None, name: str = "ruler",
                 limit: int | None = None, max_new_tokens: Mapping[str, int] | None = None) -> None:
        unknown = sorted(set(max_new_tokens or {}) - set(MAX_NEW_TOKENS))
        if unknown:
            raise ValueError(f"max_new_tokens names task families {unknown}; RULER's are {', '.join(MAX_NEW_TOKENS)}")
        self.root, self.tasks, self.name, self.limit = Path(root), tasks, name, limit
        self.max_new_tokens = {**MAX_NEW_TOKENS, **(max_new_tokens or {})}

    def _task_names(self) -> list[str]:
        if self.tasks is not None:
            return list(self.tasks)
        found = sorted(p.parent.name for p in self.root.glob("*/validation.jsonl"))
        if not found:
            raise DataNotFoundError(f"no RULER task under {self.root}: {how_to_get(self.root)}")
        return found

    def samples(self, tokenizer: Any) -> list[Sample]:
        samples = []
        for task in self._task_names():
            records = read_jsonl(self.root / task / "validation.jsonl", ("input", "outputs"), how_to_get(self.root))
            for number, record in enumerate(first_n(records, self.limit)):
                context, _, question = record["input"].rpartition("\n")
                samples.append(Sample(
                    id=f"{task}/{record.get('index', number)}", context=context, question="\n" + question,
                    answers=tuple(record["outputs"]), answer_prefix=record.get("answer_prefix", ""),
                    max_new_tokens=self.max_new_tokens.get(family(task), 32), subset=task))
        return samples

    def score(self, prediction: str, sample: Sample) -> dict[str, float]:
        match = contains_any if family(sample.subset) == "qa" else contains_fraction
        return {"string_match": match(prediction, sample.answers)}

"""Knowledge-conflict data: NQSwap / Macnoise readers, the prompt template, demonstrations, splits.

Both datasets share NQSwap's fields (`question`, `org_context`, `org_answer` list, `sub_context`,
`sub_answer` list). A dataset folder holds a split as `<split>.jsonl`, or in the hub layout
`data/<split>-*.jsonl` / `data/<split>-*.parquet` (parquet needs pyarrow). Rows sharing a question
form one group; splits are made by group (question-disjoint).

Prompt (spec A.5): demonstrations `context: {ctx}\nquestion: {q}\nanswer: {ans}\n\n`, test block
`context: {ctx}\nquestion: {q}\nanswer:`; closed-book drops the context line.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from thesis.core.errors import DataNotFoundError

FIELDS = ("question", "org_context", "org_answer", "sub_context", "sub_answer")
HOW_TO_GET = {
    "nqswap": "save the hub dataset pminervini/NQ-Swap (split dev) there, e.g. "
              "datasets.load_dataset('pminervini/NQ-Swap')['dev'].to_json('<dir>/dev.jsonl')",
    "macnoise": "save the hub dataset GWHed/dataset_macnoise (splits train_chatgpt and train) there as "
                "<split>.jsonl with datasets' to_json",
}


@dataclass(frozen=True)
class Instance:
    """One knowledge-conflict instance (Q, E_M, M, E_C, C) with its row index and question group."""

    idx: int
    group: str
    question: str
    org_context: str
    org_answer: tuple[str, ...]
    sub_context: str
    sub_answer: tuple[str, ...]


def _split_files(root: Path, split: str) -> list[Path]:
    direct = [root / f"{split}.jsonl", root / f"{split}.json"]
    found = [p for p in direct if p.is_file()]
    for pattern in (f"data/{split}-*.jsonl", f"data/{split}-*.parquet", f"{split}-*.parquet"):
        found += sorted(root.glob(pattern))
    return found


def _rows(path: Path) -> list[dict]:
    if path.suffix == ".parquet":
        import pandas as pd

        return pd.read_parquet(path).to_dict("records")
    text = path.read_text()
    if path.suffix == ".json" and text.lstrip().startswith("["):
        return json.loads(text)
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _answers(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    return tuple(str(v) for v in value)


def read_split(root: str | Path, split: str, dataset: str = "nqswap", max_rows: int | None = None,
               start_idx: int = 0) -> list[Instance]:
    """Rows of one split as Instances; `max_rows` keeps the first rows (Macnoise: 5,120)."""
    root = Path(root)
    files = _split_files(root, split)
    if not files:
        raise DataNotFoundError(f"no split {split!r} of {dataset} under {root}: "
                                f"{HOW_TO_GET.get(dataset, 'write <split>.jsonl with the NQSwap fields')}")
    rows = [row for path in files for row in _rows(path)]
    rows = rows[:max_rows] if max_rows is not None else rows
    missing = [f for f in FIELDS if f not in rows[0]] if rows else []
    if missing:
        raise DataNotFoundError(f"{files[0]} lacks the fields {missing}: it is not in the NQSwap/Macnoise schema")
    return [Instance(start_idx + i, row["question"].strip(), row["question"], row["org_context"],
                     _answers(row["org_answer"]), row["sub_context"], _answers(row["sub_answer"]))
            for i, row in enumerate(rows)]


def block(context: str | None, question: str, answer: str | None = None) -> str:
    text = (f"context: {context}\n" if context is not None else "") + f"question: {question}\nanswer:"
    return text + (f" {answer}\n\n" if answer is not None else "")


#: demonstration styles (spec A.4): which context and which answer a demonstration shows
STYLES = {"doo": ("org_context", "org_answer"), "dss": ("sub_context", "sub_answer"),
          "dso": ("sub_context", "org_answer"), "closed": (None, "org_answer")}


def demo_text(demos: list[Instance], style: str) -> str:
    context_field, answer_field = STYLES[style]
    return "".join(block(getattr(d, context_field) if context_field else None, d.question,
                         getattr(d, answer_field)[0]) for d in demos)


def prompt(instance: Instance, demos: list[Instance], style: str = "doo", context: str = "sub_context") -> str:
    """Demonstrations in `style`, then the test block with `context` (sub_context = E_C,
    org_context = E_M, None = closed-book)."""
    return demo_text(demos, style) + block(getattr(instance, context) if context else None, instance.question)


def sample_demos(pool: list[Instance], k: int, seed: int, exclude_group: str | None = None) -> list[Instance]:
    """k demonstrations from `pool` (one per question group), seeded, never the test question's group."""
    rng = random.Random(seed)
    by_group: dict[str, Instance] = {}
    for item in pool:
        if item.group != exclude_group:
            by_group.setdefault(item.group, item)
    candidates = list(by_group.values())
    return rng.sample(candidates, min(k, len(candidates)))


def groups_of(instances: list[Instance]) -> dict[str, list[Instance]]:
    grouped: dict[str, list[Instance]] = {}
    for item in instances:
        grouped.setdefault(item.group, []).append(item)
    return grouped


def dev_test_split(instances: list[Instance], n_dev_groups: int, seed: int = 42) -> tuple[list[Instance], list[Instance]]:
    """`n_dev_groups` distinct-question groups drawn with `seed` form the dev set; the rest is test."""
    grouped = groups_of(instances)
    names = sorted(grouped)
    dev_names = set(random.Random(seed).sample(names, min(n_dev_groups, len(names) - 1)))
    dev = [i for name in names if name in dev_names for i in grouped[name]]
    test = [i for name in names if name not in dev_names for i in grouped[name]]
    return dev, test

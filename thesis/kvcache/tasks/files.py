"""Reading the benchmark files: JSON Lines with the fields their publishers chose, or a clear error.

A missing file or field is reported with the path, what should be there and where it comes from,
so that preparing the data for the paper scale needs no reading of the readers' code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

from thesis.core.errors import DataNotFoundError


def read_jsonl(path: str | Path, fields: Iterable[str], how_to_get: str) -> list[dict[str, Any]]:
    """The records of a JSONL file, each checked to hold `fields`."""
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"{path} not found: {how_to_get}")
    records = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataNotFoundError(f"{path}:{number} is not JSON ({exc.msg}): {how_to_get}") from None
            missing = [name for name in fields if name not in record]
            if missing:
                raise DataNotFoundError(f"{path}:{number} lacks the field(s) {', '.join(missing)}: {how_to_get}")
            records.append(record)
    if not records:
        raise DataNotFoundError(f"{path} holds no records: {how_to_get}")
    return records


def first_n(records: list[Any], limit: int | None) -> list[Any]:
    """The first `limit` records (all when limit is None): a deterministic subset for quick runs."""
    return records if limit is None else records[:limit]

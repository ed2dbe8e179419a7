"""Rows of a benchmark file in any of its published formats: JSON Lines (optionally gzipped, as the
original releases ship) or Parquet (as the Hugging Face datasets mirror ships), checked for the
fields a task needs, with an error that says where the file comes from."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any, Iterable

from thesis.core.errors import DataNotFoundError


def _jsonl(path: Path, how_to_get: str) -> list[dict[str, Any]]:
    opener = gzip.open if path.suffix == ".gz" else open
    rows = []
    with opener(path, "rt", encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise DataNotFoundError(f"{path}:{number} is not JSON ({exc.msg}): {how_to_get}") from None
    return rows


def read_records(path: str | Path, fields: Iterable[str], how_to_get: str) -> list[dict[str, Any]]:
    """Every row of `path` (.jsonl, .jsonl.gz or .parquet) as a dict holding at least `fields`."""
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"{path} not found: {how_to_get}")
    if path.suffix == ".parquet":
        import pandas as pd

        rows = pd.read_parquet(path).to_dict("records")
    elif path.name.endswith((".jsonl", ".jsonl.gz", ".json")):
        rows = _jsonl(path, how_to_get)
    else:
        raise DataNotFoundError(f"{path}: unknown format (expected .jsonl, .jsonl.gz or .parquet): {how_to_get}")
    if not rows:
        raise DataNotFoundError(f"{path} holds no rows: {how_to_get}")
    missing = [name for name in fields if name not in rows[0]]
    if missing:
        raise DataNotFoundError(f"{path} lacks the field(s) {', '.join(missing)}: {how_to_get}")
    return rows

"""Long filler contexts measured in tokens, with one sentence inserted at a chosen depth.

Shared by the needle-in-a-haystack and passkey generators. The haystack is a list of sentences;
the inserted sentence goes between two of them (the KNorm code also moves the needle back to a
sentence boundary), at the boundary where the tokens before it are closest to depth x the
haystack's tokens. Sentences are joined by single spaces and counted with a leading space, which
is how word-level BPE tokenizers split them, so counts are exact for those and close for others.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from thesis.core.errors import DataNotFoundError

#: the passkey task's filler (landmark-attention format, spec A.2), also the offline haystack
FILLER = ("The grass is green.", "The sky is blue.", "The sun is yellow.", "Here we go.", "There and back again.")


def sentences_of(path: str | Path | None) -> list[str]:
    """Sentences of a text file or of every .txt file of a folder (sorted); the filler when None."""
    if path is None:
        return list(FILLER)
    path = Path(path)
    files = sorted(path.glob("*.txt")) if path.is_dir() else [path]
    if not path.exists() or not files:
        raise DataNotFoundError(f"haystack {path} not found: put plain-text essays there (one .txt file or a "
                                "folder of them, e.g. the Paul Graham essays), or set haystack_path=null "
                                "for the repeated filler")
    text = " ".join(f.read_text(encoding="utf-8") for f in files)
    return [s for s in re.split(r"(?<=[.!?])\s+", " ".join(text.split())) if s]


def token_count(tokenizer: Any, sentence: str) -> int:
    return len(tokenizer(" " + sentence, add_special_tokens=False).input_ids)


def fill(tokenizer: Any, sentences: list[str], n_tokens: int, start: int = 0) -> list[str]:
    """Sentences taken cyclically from `start` until they hold n_tokens tokens (at most)."""
    if n_tokens < max(token_count(tokenizer, s) for s in sentences):
        raise ValueError(f"only {n_tokens} tokens are left for the haystack once the fixed text is counted: "
                         "raise context_lengths")
    chosen, total, i = [], 0, start
    while True:
        sentence = sentences[i % len(sentences)]
        total += token_count(tokenizer, sentence)
        if total > n_tokens:
            return chosen
        chosen.append(sentence)
        i += 1


def insert_at_depth(tokenizer: Any, haystack: list[str], sentence: str, depth: float) -> tuple[str, int]:
    """The haystack with `sentence` inserted at `depth` (0 = first, 1 = last), and how many haystack
    tokens precede it."""
    if not 0 <= depth <= 1:
        raise ValueError(f"depth is a fraction of the context in [0, 1]; got {depth}.")
    boundaries = [0]
    for s in haystack:
        boundaries.append(boundaries[-1] + token_count(tokenizer, s))
    target = depth * boundaries[-1]
    index = min(range(len(boundaries)), key=lambda i: abs(boundaries[i] - target))
    return " ".join([*haystack[:index], sentence, *haystack[index:]]), boundaries[index]

"""Synthetic retrieval documents of the miniature (spec F.b), for training and for evaluation.

A byte-level model this small retrieves nothing unless it was trained to, so seeded passkey and
needle documents are mixed into training (recipe 1: text 50%, passkey 25%, NIAH 25%, loss on every
token; recipe 2 weighs the answer bytes `answer_weight` times the others and adds the mini-RULER
kinds of `ruler.py`) and the evaluation prompts come from the same generators with other seeds.

- Passkey (landmark format, spec A.2): task line, the garbage sentences repeated, and the line
  "The pass key is {k}. Remember it. {k} is the pass key." at a depth drawn uniformly; k has 5 digits.
- NIAH (RULER style): a window of corpus text with 1-4 needles "One of the special magic numbers for
  {word} is: {6 digits}." at random depths; the question asks for one of the words.

A document is `context + question + answer`; `length` is the context's exact length in bytes (BOS
included), so evaluation prompts of one length batch without padding. The needle words all have the
same length for the same reason (the question contains the word). `depth` is the fraction of the
context before the (asked) needle, snapped to the previous space.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from thesis.kvcache.mini.corpus import Corpus
from thesis.kvcache.mini.tokenizer import BOS, EOS, PAD
from thesis.kvcache.tasks.haystack import FILLER
from thesis.kvcache.tasks.passkey import TASK_LINE

PASSKEY_QUESTION = " What is the pass key? The pass key is "
NIAH_QUESTION = " What is the special magic number for {word} mentioned in the provided text? " \
                "The special magic number for {word} mentioned in the provided text is "
IGNORE = -100


@dataclass(frozen=True)
class Document:
    kind: str
    context: bytes  # without BOS
    question: bytes
    answer: bytes
    depth: float
    needle_offset: int  # byte offset of the asked needle in the context (without BOS)

    def ids(self) -> list[int]:
        """BOS + context + question + answer + EOS."""
        return [BOS, *self.context, *self.question, *self.answer, EOS]

    def answer_span(self) -> slice:
        """Positions of the answer bytes in `ids()`."""
        start = 1 + len(self.context) + len(self.question)
        return slice(start, start + len(self.answer))


def filler(n: int) -> bytes:
    text = (" ".join(FILLER) + " ").encode()
    return (text * (n // max(1, len(text)) + 2))[:n]


def _space_before(text: bytes, depth: float) -> int:
    """Index of the last space at or before depth * len(text) (0 when there is none)."""
    return max(0, text.rfind(b" ", 0, int(depth * len(text)) + 1))


def insert_needles(haystack: bytes, needles: list[bytes], depths: list[float]) -> tuple[bytes, list[int]]:
    """Haystack with ' needle' inserted at each depth (cut at the previous space of the original
    haystack), and each needle's offset in the result."""
    cuts = [_space_before(haystack, d) for d in depths]
    order = sorted(range(len(needles)), key=lambda i: (cuts[i], i))
    pieces, offsets, previous, length = [], [0] * len(needles), 0, 0
    for i in order:
        pieces.append(haystack[previous:cuts[i]])
        length += cuts[i] - previous
        offsets[i] = length + 1
        pieces.append(b" " + needles[i])
        length += 1 + len(needles[i])
        previous = cuts[i]
    pieces.append(haystack[previous:])
    return b"".join(pieces), offsets


def passkey_document(rng: np.random.Generator, length: int, depth: float | None = None) -> Document:
    key = str(int(rng.integers(10_000, 100_000))).encode()
    depth = float(rng.uniform()) if depth is None else depth
    info = b"The pass key is " + key + b". Remember it. " + key + b" is the pass key."
    head = TASK_LINE.encode() + b" "
    room = length - 1 - len(head) - len(info) - 1
    if room < 8:
        raise ValueError(f"passkey context of {length} bytes is too short for the task and key lines")
    body, (offset,) = insert_needles(filler(room), [info], [depth])
    return Document("passkey", head + body, PASSKEY_QUESTION.encode(), key, depth, len(head) + offset)


def niah_document(rng: np.random.Generator, length: int, text: np.ndarray, words: list[str],
                  depth: float | None = None, max_needles: int = 4) -> Document:
    chosen = rng.choice(len(words), size=int(rng.integers(1, max_needles + 1)), replace=False)
    numbers = [str(int(rng.integers(100_000, 1_000_000))).encode() for _ in chosen]
    needles = [f"One of the special magic numbers for {words[i]} is: ".encode() + n + b"." for i, n in zip(chosen, numbers)]
    asked = int(rng.integers(len(chosen)))
    room = length - 1 - sum(len(n) + 1 for n in needles)
    if room < 8:
        raise ValueError(f"NIAH context of {length} bytes is too short for {len(needles)} needles")
    start = int(rng.integers(0, len(text) - room))
    haystack = text[start:start + room].tobytes()
    depths = [float(rng.uniform()) for _ in needles]
    if depth is not None:
        depths[asked] = depth
    haystack, offsets = insert_needles(haystack, needles, depths)
    offset = offsets[asked]
    question = NIAH_QUESTION.format(word=words[chosen[asked]]).encode()
    return Document("niah", haystack, question, numbers[asked], offset / max(1, len(haystack)), offset)


def equal_length_words(words: list[str], length: int, limit: int = 200) -> list[str]:
    found = [w for w in words if len(w) == length][:limit]
    if len(found) < 8:
        raise ValueError(f"the corpus has fewer than 8 words of {length} letters for NIAH keys")
    return found


def evaluation_documents(kind: str, n: int, length: int, corpus: Corpus, words: list[str], seed: int) -> list[Document]:
    """n prompts of `length` context bytes, depths stratified in 10 bins (spec F.b M3)."""
    rng = np.random.default_rng(seed)
    docs = []
    for i in range(n):
        depth = ((i % 10) + float(rng.uniform(0.05, 0.95))) / 10
        docs.append(passkey_document(rng, length, depth) if kind == "passkey"
                    else niah_document(rng, length, corpus.heldout, words, depth))
    return docs


@dataclass
class TrainingStream:
    """Batches (input_ids, labels, weights) of `seq_len` tokens: corpus windows and synthetic documents.

    `weights` is the loss weight of each label: 0 where the label is ignored, `answer_weight` on the
    answer bytes of a synthetic document, 1 elsewhere (`answer_weight` = 1 is the unweighted loss).
    `extra` adds document kinds (share, generator(rng, length, text, words)) after text / passkey /
    NIAH; without it the draws are those of the three-way mixture alone."""

    corpus: Corpus
    words: list[str]
    seq_len: int
    batch_size: int
    mixture: tuple[float, float, float] = (0.5, 0.25, 0.25)
    min_doc_length: int = 256
    seed: int = 0
    answer_weight: float = 1.0
    extra: tuple[tuple[float, Callable[..., Document]], ...] = ()

    def __post_init__(self) -> None:
        if self.answer_weight <= 0:
            raise ValueError(f"answer_weight must be > 0 (1 = unweighted loss); got {self.answer_weight}")
        self.rng = np.random.default_rng(self.seed)

    def row(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(input_ids, labels, weights) of one row: a corpus window after BOS, or a padded synthetic document."""
        shares = np.asarray([*self.mixture, *(share for share, _ in self.extra)], dtype=float)
        kind = self.rng.choice(len(shares), p=shares / shares.sum())
        ids = np.full(self.seq_len, PAD, dtype=np.int64)
        weights = np.ones(self.seq_len, dtype=np.float32)
        if kind == 0:
            start = int(self.rng.integers(0, len(self.corpus.train) - self.seq_len))
            ids[0], ids[1:] = BOS, self.corpus.train[start:start + self.seq_len - 1]
            return ids, ids, weights
        length = int(self.rng.integers(min(self.min_doc_length, self.seq_len // 2), self.seq_len + 1))
        for _ in range(2):  # the second draw shortens the context by what question and answer overflowed
            doc = (passkey_document(self.rng, length) if kind == 1
                   else niah_document(self.rng, length, self.corpus.train, self.words) if kind == 2
                   else self.extra[kind - 3][1](self.rng, length, self.corpus.train, self.words))
            tokens = doc.ids()
            length -= len(tokens) - self.seq_len
            if len(tokens) <= self.seq_len:
                ids[:len(tokens)] = tokens
                labels = ids.copy()
                labels[len(tokens):] = IGNORE
                weights[len(tokens):] = 0.0
                weights[doc.answer_span()] = self.answer_weight
                return ids, labels, weights
        raise ValueError(f"seq_len={self.seq_len} cannot hold a {doc.kind} document")

    def batch(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        rows = [self.row() for _ in range(self.batch_size)]
        return tuple(torch.from_numpy(np.stack([r[i] for r in rows])) for i in range(3))

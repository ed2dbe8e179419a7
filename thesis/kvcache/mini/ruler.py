"""M5 of the miniature (spec F.b, optional): mini-RULER tasks on bytes, for training and evaluation.

RULER's (thesis Tables 4.1 / 4.3) retrieval and tracing tasks at the scale of a 1024-byte context;
every task keeps the lengths of question and answer fixed, so evaluation prompts of one context
length batch without padding (as M3):

- `niah_multikey`: 4 needles "One of the special magic numbers for {word} is: {6 digits}." with
  distinct words in corpus text; one word is asked.
- `niah_multivalue`: 2 needles for the same word; the answer is both numbers in the order they
  appear, separated by a space.
- `niah_multiquery`: 4 needles, 2 of their words asked; the answer is their numbers in the order asked.
- `vt` (variable tracking): in the passkey filler, "VAR {A} = {5 digits}." then "VAR {B} = VAR {A}."
  and "VAR {C} = VAR {B}." in this order at increasing depths (names: 5 upper-case letters); the
  answer is "A B C".

Common / frequent word extraction are not built. `depth` is the fraction of the context before the
first needle the answer needs; the depth given to a generator puts that needle there (and the other
needles the answer needs behind it).
"""

from __future__ import annotations

import string
from typing import Callable

import numpy as np

from thesis.core.errors import ConfigError
from thesis.kvcache.mini.corpus import Corpus
from thesis.kvcache.mini.documents import NIAH_QUESTION, Document, filler, insert_needles

MULTI_QUESTION = " What are the special magic numbers for {words} mentioned in the provided text? " \
                 "The special magic numbers for {words} mentioned in the provided text are "
VT_QUESTION = " Which variables are assigned the value {value} in the text above? They are: "
Generator = Callable[[np.random.Generator, int, np.ndarray, list[str], "float | None"], Document]


def _number(rng: np.random.Generator, digits: int) -> bytes:
    return str(int(rng.integers(10 ** (digits - 1), 10 ** digits))).encode()


def _needle(word: str, number: bytes) -> bytes:
    return f"One of the special magic numbers for {word} is: ".encode() + number + b"."


def _haystack(rng: np.random.Generator, text: np.ndarray, room: int, kind: str, length: int) -> bytes:
    if room < 8:
        raise ValueError(f"{kind} context of {length} bytes is too short for its needles")
    start = int(rng.integers(0, len(text) - room))
    return text[start:start + room].tobytes()


def _depths(rng: np.random.Generator, n: int, first: int, depth: float | None, after: bool = False) -> list[float]:
    """n uniform depths; needle `first` at `depth` when given (and, with `after`, the others behind it)."""
    depths = [float(rng.uniform(depth if after and depth is not None else 0.0, 1.0)) for _ in range(n)]
    if depth is not None:
        depths[first] = depth
    return depths


def multikey_document(rng: np.random.Generator, length: int, text: np.ndarray, words: list[str],
                      depth: float | None = None, keys: int = 4) -> Document:
    chosen = [words[i] for i in rng.choice(len(words), size=keys, replace=False)]
    numbers = [_number(rng, 6) for _ in chosen]
    needles = [_needle(w, n) for w, n in zip(chosen, numbers)]
    asked = int(rng.integers(keys))
    haystack = _haystack(rng, text, length - 1 - sum(len(n) + 1 for n in needles), "niah_multikey", length)
    context, offsets = insert_needles(haystack, needles, _depths(rng, keys, asked, depth))
    question = NIAH_QUESTION.format(word=chosen[asked]).encode()
    return Document("niah_multikey", context, question, numbers[asked], offsets[asked] / len(context), offsets[asked])


def multivalue_document(rng: np.random.Generator, length: int, text: np.ndarray, words: list[str],
                        depth: float | None = None, values: int = 2) -> Document:
    word = words[int(rng.integers(len(words)))]
    numbers = [_number(rng, 6) for _ in range(values)]
    needles = [_needle(word, n) for n in numbers]
    haystack = _haystack(rng, text, length - 1 - sum(len(n) + 1 for n in needles), "niah_multivalue", length)
    context, offsets = insert_needles(haystack, needles, _depths(rng, values, 0, depth, after=True))
    in_order = [numbers[i] for i in sorted(range(values), key=lambda i: offsets[i])]
    first = min(offsets)
    question = MULTI_QUESTION.format(words=word).encode()
    return Document("niah_multivalue", context, question, b" ".join(in_order), first / len(context), first)


def multiquery_document(rng: np.random.Generator, length: int, text: np.ndarray, words: list[str],
                        depth: float | None = None, keys: int = 4, queries: int = 2) -> Document:
    chosen = [words[i] for i in rng.choice(len(words), size=keys, replace=False)]
    numbers = [_number(rng, 6) for _ in chosen]
    needles = [_needle(w, n) for w, n in zip(chosen, numbers)]
    asked = [int(i) for i in rng.choice(keys, size=queries, replace=False)]
    haystack = _haystack(rng, text, length - 1 - sum(len(n) + 1 for n in needles), "niah_multiquery", length)
    depths = _depths(rng, keys, asked[0], depth)
    if depth is not None:  # the other asked needle behind the first
        depths[asked[1]] = float(rng.uniform(depth, 1.0))
    context, offsets = insert_needles(haystack, needles, depths)
    question = MULTI_QUESTION.format(words=" and ".join(chosen[i] for i in asked)).encode()
    first = min(offsets[i] for i in asked)
    return Document("niah_multiquery", context, question, b" ".join(numbers[i] for i in asked),
                    first / len(context), first)


def variable_tracking_document(rng: np.random.Generator, length: int, text: np.ndarray, words: list[str],
                               depth: float | None = None, hops: int = 2) -> Document:
    letters = np.frombuffer(string.ascii_uppercase.encode(), dtype=np.uint8)
    names: list[bytes] = []
    while len(names) < hops + 1:
        name = letters[rng.integers(0, 26, size=5)].tobytes()
        if name not in names:
            names.append(name)
    value = _number(rng, 5)
    statements = [b"VAR " + names[0] + b" = " + value + b"."]
    statements += [b"VAR " + names[i + 1] + b" = VAR " + names[i] + b"." for i in range(hops)]
    room = length - 1 - sum(len(s) + 1 for s in statements)
    if room < 8:
        raise ValueError(f"vt context of {length} bytes is too short for {len(statements)} statements")
    depths = sorted(float(rng.uniform()) for _ in statements)
    if depth is not None:  # the chain starts at `depth` and keeps its order after it
        depths = [depth + (1 - depth) * i / (hops + 1) for i in range(hops + 1)]
    context, offsets = insert_needles(filler(room), statements, depths)
    question = VT_QUESTION.format(value=value.decode()).encode()
    return Document("vt", context, question, b" ".join(names), offsets[0] / len(context), offsets[0])


GENERATORS: dict[str, Generator] = {"niah_multikey": multikey_document, "niah_multivalue": multivalue_document,
                                    "niah_multiquery": multiquery_document, "vt": variable_tracking_document}


def generator_of(kind: str) -> Generator:
    if kind not in GENERATORS:
        raise ConfigError(f"unknown mini-RULER task {kind!r}; choose among {', '.join(GENERATORS)}")
    return GENERATORS[kind]


def ruler_documents(kind: str, n: int, length: int, corpus: Corpus, words: list[str], seed: int) -> list[Document]:
    """n prompts of `length` context bytes on held-out text, depths stratified in 10 bins (as M3)."""
    generate = generator_of(kind)
    rng = np.random.default_rng(seed)
    return [generate(rng, length, corpus.heldout, words, ((i % 10) + float(rng.uniform(0.05, 0.95))) / 10)
            for i in range(n)]

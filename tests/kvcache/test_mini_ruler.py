"""kv_mini M5 (mini-RULER): each task's answer recovered from its context by an independent parser,
equal lengths within a task, depth stratification, the tasks in the training stream."""

import re

import numpy as np
import pytest
import torch

from thesis.core.errors import ConfigError
from thesis.kvcache.mini.documents import TrainingStream
from thesis.kvcache.mini.ruler import GENERATORS, generator_of, ruler_documents
from thesis.kvcache.mini.tokenizer import EOS

NEEDLE = re.compile(rb"One of the special magic numbers for ([a-z]+) is: (\d{6})\.")


def _needles(context: bytes) -> list[tuple[str, bytes]]:
    return [(m.group(1).decode(), m.group(2)) for m in NEEDLE.finditer(context)]


def _asked_words(question: bytes) -> list[str]:
    found = re.search(rb"numbers? for ([a-z ]+?) mentioned", question).group(1).decode()
    return found.split(" and ")


def _chain(context: bytes, value: bytes) -> list[bytes]:
    """Variables holding `value`, followed statement by statement."""
    holding = []
    for name, source in re.findall(rb"VAR ([A-Z]{5}) = (VAR [A-Z]{5}|\d{5})\.", context):
        if source == value or (source.startswith(b"VAR ") and source[4:] in holding):
            holding.append(name)
    return holding


@pytest.mark.parametrize("kind", sorted(GENERATORS))
def test_answers_follow_from_the_context(kind, corpus, words):
    docs = ruler_documents(kind, 20, 400, corpus, words, seed=7)
    assert len({(len(d.context), len(d.question), len(d.answer)) for d in docs}) == 1
    assert all(len(d.context) + 1 == 400 for d in docs)
    bins = [min(int(d.depth * 10), 9) for d in docs]
    assert len(set(bins)) >= 6  # stratified over the depth bins
    for doc in docs:
        needles = _needles(doc.context)
        if kind == "niah_multikey":
            assert len(needles) == 4 and len({w for w, _ in needles}) == 4
            (word,) = _asked_words(doc.question)
            assert doc.answer == dict(needles)[word]
        elif kind == "niah_multivalue":
            assert len(needles) == 2 and needles[0][0] == needles[1][0] == _asked_words(doc.question)[0]
            assert doc.answer == needles[0][1] + b" " + needles[1][1]  # order of appearance
        elif kind == "niah_multiquery":
            values = dict(needles)
            assert doc.answer == b" ".join(values[w] for w in _asked_words(doc.question))  # order asked
        else:
            value = re.search(rb"value (\d{5})", doc.question).group(1)
            assert doc.answer.split(b" ") == _chain(doc.context, value) and len(doc.answer.split(b" ")) == 3
        assert doc.context[doc.needle_offset:].startswith(b"One of" if kind != "vt" else b"VAR ")


def test_training_stream_draws_the_ruler_kinds_with_weighted_answers(corpus, words):
    extra = tuple((1.0, generator_of(kind)) for kind in sorted(GENERATORS))
    stream = TrainingStream(corpus, words, seq_len=600, batch_size=40, mixture=(0.0, 0.0, 0.0), seed=2,
                            answer_weight=5.0, extra=extra)
    ids, labels, weights = stream.batch()
    assert (ids == EOS).any(dim=1).all()  # every row a mini-RULER document
    texts = [bytes(row[1:row.index(EOS)]) for row in ids.tolist()]
    assert any(b"VAR " in t for t in texts) and sum(len(_needles(t)) == 4 for t in texts) > 5
    for row, w in zip(ids.tolist(), weights):
        heavy = (w == 5.0).nonzero().flatten()
        answer = bytes(row[int(heavy[0]):int(heavy[-1]) + 1])
        assert row[int(heavy[-1]) + 1] == EOS and len(heavy) == len(answer)
        assert re.fullmatch(rb"\d{6}( \d{6})?|[A-Z]{5}( [A-Z]{5}){2}", answer)


def test_three_way_mixture_draws_are_unchanged_by_an_empty_extra(corpus, words):
    a = TrainingStream(corpus, words, seq_len=512, batch_size=16, seed=9).batch()
    b = TrainingStream(corpus, words, seq_len=512, batch_size=16, seed=9, extra=()).batch()
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_unknown_task_and_short_context_are_refused(corpus, words):
    with pytest.raises(ConfigError, match="niah_multikey"):
        generator_of("cwe")
    with pytest.raises(ValueError, match="too short"):
        GENERATORS["niah_multikey"](np.random.default_rng(0), 200, corpus.heldout, words, None)

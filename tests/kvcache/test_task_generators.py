"""Needle and passkey generators: deterministic from their seed, the inserted sentence at the requested
depth, scores that recognise a right answer."""

import pytest
from transformers import AutoTokenizer

from thesis.core import fixtures
from thesis.kvcache.tasks.haystack import token_count
from thesis.kvcache.tasks.needle import ANSWER_PHRASE, NEEDLE, NeedleTask
from thesis.kvcache.tasks.passkey import PasskeyTask


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return AutoTokenizer.from_pretrained(fixtures.materialize("hf_llama_tiny", tmp_path_factory.mktemp("fixtures")))


def haystack_tokens_before(tokenizer, context: str, inserted: str, opening: str) -> int:
    """Tokens of the haystack sentences before `inserted`, counted as the generators count them."""
    before = context[len(opening):context.index(inserted)].split(". ")
    sentences = [s if s.endswith(".") else s + "." for s in before if s.strip()]
    return sum(token_count(tokenizer, s.strip()) for s in sentences)


def test_needle_is_deterministic_and_at_each_depth(tokenizer):
    task = NeedleTask(context_lengths=[400], depths_percent=[0, 50, 100], seed=3)
    samples = task.samples(tokenizer)
    assert samples == NeedleTask(context_lengths=[400], depths_percent=[0, 50, 100], seed=3).samples(tokenizer)
    assert [s.meta["depth_percent"] for s in samples] == [0, 50, 100]
    opening = "This is a very long story book: <book> "
    total = haystack_tokens_before(tokenizer, samples[-1].context, NEEDLE, opening)  # needle last: whole haystack
    sentence = max(token_count(tokenizer, s) for s in ("The grass is green.", "There and back again."))
    for sample in samples:
        assert sample.context.count(NEEDLE) == 1
        before = haystack_tokens_before(tokenizer, sample.context, NEEDLE, opening)
        assert before == sample.meta["tokens_before_needle"]
        assert abs(before - sample.meta["depth_percent"] / 100 * total) <= sentence
    assert samples[0].context.startswith(opening + NEEDLE)
    assert samples[-1].context.endswith(NEEDLE + " </book>.")


def test_needle_scores(tokenizer):
    sample = NeedleTask(context_lengths=[300], depths_percent=[50]).samples(tokenizer)[0]
    task = NeedleTask(context_lengths=[300], depths_percent=[50])
    right = task.score(" " + NEEDLE, sample)
    assert right == {"rouge1": 1.0, "token_f1": 1.0, "contains_answer": 1.0, "exact_match": 1.0}
    partial = task.score(f"You should {ANSWER_PHRASE}.", sample)
    assert partial["contains_answer"] == 1.0 and 0 < partial["token_f1"] < 1 and partial["exact_match"] == 0.0
    assert 0 < partial["rouge1"] < 1


def test_passkey_is_deterministic_and_at_each_depth(tokenizer):
    task = PasskeyTask(context_lengths=[400], samples_per_length=2, depths_percent=[0, 50, 100], seed=7)
    samples = task.samples(tokenizer)
    assert samples == PasskeyTask(context_lengths=[400], samples_per_length=2, depths_percent=[0, 50, 100],
                                  seed=7).samples(tokenizer)
    assert len(samples) == 6
    assert len({s.answers for s in samples}) == 2  # one key per sample index, shared by its depths
    for sample in samples:
        key = sample.answers[0]
        assert 1 <= int(key) <= 50000
        assert sample.context.count(f"The pass key is {key}. Remember it. {key} is the pass key.") == 1
    depths = [s.meta["tokens_before_key"] for s in samples[:3]]
    assert depths[0] == 0 < depths[1] < depths[2]
    assert len(tokenizer(samples[0].context).input_ids) <= 400


def test_passkey_random_depths_and_scoring(tokenizer):
    samples = PasskeyTask(context_lengths=[300], samples_per_length=3, seed=0).samples(tokenizer)
    assert len({s.meta["depth"] for s in samples}) == 3
    task = PasskeyTask(context_lengths=[300])
    key = samples[0].answers[0]
    assert task.score(f" {key}. Remember", samples[0]) == {"accuracy": 1.0}
    assert task.score(f" {key}1", samples[0]) == {"accuracy": 0.0}
    assert task.score(" none", samples[0]) == {"accuracy": 0.0}


def test_too_short_a_context_is_refused(tokenizer):
    with pytest.raises(ValueError, match="raise context_lengths"):
        PasskeyTask(context_lengths=[20], samples_per_length=1).samples(tokenizer)

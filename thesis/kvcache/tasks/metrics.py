"""Answer scores shared by the tasks: normalised exact match, substring match, token F1, Rouge, boxed answers.

Normalisation (lower case, no punctuation, no English articles, single spaces) follows the SQuAD
convention that LongBench's QA F1 also uses. Substring match is RULER's string match (spec C.3):
a reference counts as found when it occurs, case-insensitively, in the prediction. The two Rouge
scores are the packages the benchmarks' own scorers call, so the numbers are theirs: LongBench's
summaries use Rouge-L F of the `rouge` package (an empty or unparsable prediction scores 0, as in
LongBench's `rouge_score`); kvpress's needle-in-a-haystack uses Rouge-1 F of Google's `rouge-score`
with the Porter stemmer, between the needle and the answer (kvpress reports it x 10; here in [0, 1]).
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence
from functools import cache

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalize(text: str) -> str:
    text = _ARTICLES.sub(" ", text.lower().translate(_PUNCTUATION))
    return " ".join(text.split())


def exact_match(prediction: str, references: Sequence[str]) -> float:
    """1 if the normalised prediction equals one normalised reference."""
    return float(any(normalize(prediction) == normalize(ref) for ref in references))


def contains_any(prediction: str, references: Sequence[str]) -> float:
    """1 if one reference occurs in the prediction (case-insensitive)."""
    return float(any(ref.lower() in prediction.lower() for ref in references))


def contains_fraction(prediction: str, references: Sequence[str]) -> float:
    """Fraction of the references that occur in the prediction (case-insensitive)."""
    return sum(ref.lower() in prediction.lower() for ref in references) / len(references)


def token_f1(prediction: str, references: Sequence[str]) -> float:
    """Best unigram F1 between the normalised prediction and a reference."""

    def f1(reference: str) -> float:
        predicted, expected = normalize(prediction).split(), normalize(reference).split()
        common = sum((Counter(predicted) & Counter(expected)).values())
        if common == 0:
            return 0.0
        precision, recall = common / len(predicted), common / len(expected)
        return 2 * precision * recall / (precision + recall)

    return max(f1(ref) for ref in references)


def rouge_l(prediction: str, references: Sequence[str]) -> float:
    """Best Rouge-L F between the prediction and a reference (`rouge` package, LongBench's metric)."""
    from rouge import Rouge

    def score(reference: str) -> float:
        try:
            return Rouge().get_scores([prediction], [reference], avg=True)["rouge-l"]["f"]
        except (ValueError, RecursionError):  # empty hypothesis or reference; very long texts recurse
            return 0.0

    return max(score(ref) for ref in references)


@cache
def _rouge1_scorer():
    """Google's scorer; imported on first use, since `rouge-score` imports all of nltk (seconds)."""
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rouge1"], use_stemmer=True)


def rouge_1(prediction: str, references: Sequence[str]) -> float:
    """Best Rouge-1 F between a reference (the needle) and the prediction (`rouge-score`, stemmed)."""
    return max(_rouge1_scorer().score(ref, prediction)["rouge1"].fmeasure for ref in references)


def first_integer(text: str) -> int | None:
    match = re.search(r"\d+", text)
    return int(match.group()) if match else None


def last_boxed(text: str) -> str | None:
    r"""Content of the last `\boxed{...}` in text, braces balanced; None when there is none."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, begin = 0, start + len("\\boxed{")
    for i in range(begin, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            if depth == 0:
                return text[begin:i]
            depth -= 1
    return None


def same_math_answer(predicted: str | None, reference: str) -> float:
    """1 if two final answers agree once spaces, `$` and a trailing period are dropped."""
    if predicted is None:
        return 0.0

    def clean(answer: str) -> str:
        return re.sub(r"\s+|\$", "", answer).rstrip(".")

    return float(clean(predicted) == clean(reference))

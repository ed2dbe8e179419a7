"""GSM8K and HumanEval readers (both published formats), answer extraction, execution-based
pass@1 and the binomial standard error of Table 5.8."""

import itertools
import math

import numpy as np
import pytest

from thesis.core.errors import DataNotFoundError
from thesis.core.fixtures import materialize
from thesis.sinks.tasks import gsm8k, humaneval
from thesis.sinks.tasks.stats import binomial_stderr


@pytest.fixture(scope="module")
def gsm8k_dir(tmp_path_factory):
    return materialize("gsm8k_tiny", tmp_path_factory.mktemp("fixtures"))


@pytest.fixture(scope="module")
def humaneval_dir(tmp_path_factory):
    return materialize("humaneval_tiny", tmp_path_factory.mktemp("fixtures"))


def test_gsm8k_jsonl_and_parquet_hold_the_same_problems(gsm8k_dir):
    jsonl = gsm8k.read_gsm8k(gsm8k_dir / "grade-school-math" / "data" / "test.jsonl")
    parquet = gsm8k.read_gsm8k(gsm8k_dir / "main" / "test-00000-of-00001.parquet")
    assert jsonl == parquet and len(jsonl) == 4
    assert [p.target for p in jsonl] == ["1000", "180", "5", "-3"]  # "#### 1,000" loses its separator


@pytest.mark.parametrize("text, strict, flexible", [
    ("so 3 + 4 = 7.\n#### 7", "7", "7"),
    ("The answer is $1,000.", None, "1000"),
    ("first 12, then -3", None, "-3"),
    ("#### 42 and later 7", "42", "7"),
    ("no number here", None, None),
])
def test_gsm8k_extraction(text, strict, flexible):
    assert gsm8k.extract(text, "strict") == strict
    assert gsm8k.extract(text, "flexible") == flexible


def test_gsm8k_scoring_stops_at_the_next_question_and_builds_fewshot_prompts(gsm8k_dir):
    train = gsm8k.read_gsm8k(gsm8k_dir / "main" / "train-00000-of-00001.parquet")
    problem = gsm8k.read_gsm8k(gsm8k_dir / "main" / "test-00000-of-00001.parquet")[1]
    assert gsm8k.is_correct(problem, " 60 * 3 = 180.\n#### 180\n\nQuestion: what is 2 + 2?\nAnswer: 4")
    assert not gsm8k.is_correct(problem, " 60 * 3 = 181")
    prompt = gsm8k.fewshot_prompt(problem, train)
    assert prompt.count("Question:") == 3 and prompt.endswith(f"Question: {problem.question}\nAnswer:")
    with pytest.raises(ValueError, match="strict or flexible"):
        gsm8k.extract("1", "loose")


def test_missing_or_incomplete_files_name_the_fix(tmp_path):
    with pytest.raises(DataNotFoundError, match="openai/gsm8k"):
        gsm8k.read_gsm8k(tmp_path / "test.jsonl")
    (tmp_path / "bad.jsonl").write_text('{"question": "q"}\n')
    with pytest.raises(DataNotFoundError, match="lacks the field"):
        gsm8k.read_gsm8k(tmp_path / "bad.jsonl")


def test_humaneval_canonical_solutions_pass_and_wrong_or_hanging_ones_fail(humaneval_dir):
    problems = humaneval.read_humaneval(humaneval_dir / "data" / "HumanEval.jsonl.gz")
    assert problems == humaneval.read_humaneval(humaneval_dir / "openai_humaneval" / "test-00000-of-00001.parquet")
    assert all(humaneval.passes(p, p.canonical_solution) for p in problems)
    add = problems[0]
    assert not humaneval.passes(add, "    return a - b\n")
    assert not humaneval.passes(add, "    while True:\n        pass\n", timeout=1.0)
    # the completion is cut where a new top-level statement starts, as lm-eval does
    assert humaneval.passes(add, "    return a + b\n\ndef add(a, b):\n    return 0\n")


def test_pass_at_k_matches_enumeration():
    for n, c, k in [(5, 2, 1), (5, 2, 3), (6, 0, 2), (4, 4, 2)]:
        subsets = list(itertools.combinations(range(n), k))
        expected = np.mean([any(i < c for i in s) for s in subsets])
        assert humaneval.pass_at_k(n, c, k) == pytest.approx(expected)
    with pytest.raises(ValueError):
        humaneval.pass_at_k(3, 4, 1)


def test_binomial_stderr_is_the_population_std_of_the_outcomes_over_root_n():
    outcomes = np.array([1] * 76 + [0] * 24)
    assert binomial_stderr(outcomes.mean(), len(outcomes)) == pytest.approx(outcomes.std() / math.sqrt(100))
    assert binomial_stderr(0.76, 1319) == pytest.approx(0.0118, abs=5e-5)  # the thesis prints 0.01

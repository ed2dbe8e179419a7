"""Benchmark readers on small files written here in each benchmark's published layout and field names;
a missing file is refused with its path and how to get it; the answer scores."""

import json

import pytest

from thesis.core.errors import DataNotFoundError
from thesis.kvcache.tasks.longbench import LongBenchTask
from thesis.kvcache.tasks.loogle import LoogleTask
from thesis.kvcache.tasks.math500 import Math500Task
from thesis.kvcache.tasks.metrics import contains_fraction, exact_match, last_boxed, rouge_1, rouge_l, token_f1
from thesis.kvcache.tasks.ruler import RulerTask
from thesis.kvcache.tasks.zero_scrolls import ZeroScrollsTask


def write_jsonl(path, records):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def test_ruler(tmp_path):
    write_jsonl(tmp_path / "niah_multikey_1" / "validation.jsonl", [
        {"index": 0, "input": "Some numbers are hidden.\nOne: 11. Two: 22.\nWhat are the numbers for one and two?",
         "outputs": ["11", "22"], "length": 20, "length_w_model_temp": 20,
         "answer_prefix": " The numbers are", "token_position_answer": 5}])
    write_jsonl(tmp_path / "qa_1" / "validation.jsonl", [
        {"index": 3, "input": "Documents.\n\nParis is in France.\n\nQuestion: Where is Paris?",
         "outputs": ["France", "FR"], "length": 12, "answer_prefix": " Answer:"}])
    task = RulerTask(tmp_path)
    niah, qa = task.samples(tokenizer=None)
    assert (niah.subset, niah.id, niah.answers) == ("niah_multikey_1", "niah_multikey_1/0", ("11", "22"))
    assert niah.context == "Some numbers are hidden.\nOne: 11. Two: 22."
    assert niah.question == "\nWhat are the numbers for one and two?" and niah.answer_prefix == " The numbers are"
    assert niah.max_new_tokens == 128 and qa.max_new_tokens == 32
    assert qa.question == "\nQuestion: Where is Paris?"
    assert task.score("11 and 33", niah) == {"string_match": 0.5}  # fraction of references found
    assert task.score("in france", qa) == {"string_match": 1.0}  # any reference found
    short, same = RulerTask(tmp_path, max_new_tokens={"niah": 8}).samples(tokenizer=None)
    assert (short.max_new_tokens, same.max_new_tokens) == (8, 32)
    with pytest.raises(ValueError, match="task families"):
        RulerTask(tmp_path, max_new_tokens={"needle": 8})


def test_longbench(tmp_path):
    common = {"length": 10, "language": "en", "all_classes": None}
    write_jsonl(tmp_path / "hotpotqa.jsonl", [
        {"input": "Who wrote it?", "context": "It was written by Ann Lee.", "answers": ["Ann Lee"],
         "dataset": "hotpotqa", "_id": "a1", **common}])
    write_jsonl(tmp_path / "trec.jsonl", [
        {"input": "What city?", "context": "Examples.", "answers": ["Location"], "dataset": "trec", "_id": "t1",
         **common, "all_classes": ["Location", "Person", "Number"]}])
    write_jsonl(tmp_path / "passage_retrieval_en.jsonl", [
        {"input": "A summary.", "context": "Paragraph 1: x. Paragraph 2: y.", "answers": ["Paragraph 2"],
         "dataset": "passage_retrieval_en", "_id": "p1", **common}])
    task = LongBenchTask(tmp_path, ["hotpotqa", "trec", "passage_retrieval_en"],
                         max_new_tokens={"hotpotqa": 32, "trec": 64, "passage_retrieval_en": 32})
    qa, trec, retrieval = task.samples(tokenizer=None)
    assert qa.context == "It was written by Ann Lee." and qa.question == "\n\nQuestion: Who wrote it?"
    assert (qa.subset, qa.id, qa.max_new_tokens) == ("hotpotqa", "hotpotqa/a1", 32)
    assert task.score("Ann Lee", qa) == {"qa_f1": 1.0}
    assert task.score("Location", trec) == {"classification": 1.0}
    assert task.score("Location or Person", trec) == {"classification": 0.5}
    assert task.score("Paragraph 2", retrieval) == {"retrieval": 1.0}
    write_jsonl(tmp_path / "gov_report.jsonl", [
        {"input": "", "context": "A long report.", "answers": ["the agency spent more"], "dataset": "gov_report",
         "_id": "g1", **common}])
    summary, = LongBenchTask(tmp_path, ["gov_report"], max_new_tokens={"gov_report": 64}).samples(tokenizer=None)
    assert summary.question == ""
    assert task.score("agency spent more", summary) == {"rouge_l": pytest.approx(2 * 0.75 / 1.75, abs=1e-6)}
    with pytest.raises(ValueError, match="no metric"):
        LongBenchTask(tmp_path, ["dureader"], max_new_tokens={"dureader": 128})


def test_loogle_pairs_as_list_or_text(tmp_path):
    pairs = [{"Q": "Who founded it?", "A": "Ada", "S": ["Ada founded it."]}, {"Q": "When?", "A": "1901", "S": []}]
    write_jsonl(tmp_path / "shortdep_qa.jsonl", [
        {"input": "Ada founded it in 1901.", "title": "doc1", "qa_pairs": pairs, "output": "none"},
        {"input": "Bo left.", "title": "doc2", "qa_pairs": str([{"Q": "Who left?", "A": "Bo", "S": ["Bo left."]}]),
         "output": "none"}])
    task = LoogleTask(tmp_path)
    samples = task.samples(tokenizer=None)
    assert [s.answers for s in samples] == [("Ada",), ("1901",), ("Bo",)]
    assert samples[2].context == "Bo left." and samples[2].question == "\n\nQuestion: Who left?"
    assert task.score("It was Ada.", samples[0])["contains_answer"] == 1.0
    assert len(LoogleTask(tmp_path, limit=2).samples(tokenizer=None)) == 2


def test_zero_scrolls(tmp_path):
    text = "Read the story.\n\nStory:\nOnce upon a time.\n\nQuestion: When?\n\nAnswer:"
    end = text.index("\n\nQuestion")
    write_jsonl(tmp_path / "narrative_qa" / "validation.jsonl", [
        {"id": "n1", "pid": "n1_0", "input": text, "output": "Once upon a time", "document_start_index": 24,
         "document_end_index": end, "query_start_index": end + 2, "query_end_index": len(text) - 9,
         "truncation_seperator": "... [The rest of the story is omitted]\n\n"}])
    task = ZeroScrollsTask(tmp_path, ["narrative_qa"])
    (sample,) = task.samples(tokenizer=None)
    assert sample.context == "Read the story.\n\nStory:\nOnce upon a time."
    assert sample.question == "\n\nQuestion: When?\n\nAnswer:"
    assert task.score("once upon a time", sample) == {"token_f1": 1.0, "exact_match": 1.0}


def test_math500(tmp_path):
    write_jsonl(tmp_path / "test.jsonl", [
        {"problem": "What is $1+1$?", "solution": "It is $\\boxed{2}$.", "answer": "2", "subject": "Algebra",
         "level": 1, "unique_id": "test/algebra/1.json"}])
    task = Math500Task(tmp_path)
    (sample,) = task.samples(tokenizer=None)
    assert sample.context == "What is $1+1$?" and "\\boxed{}" in sample.question
    assert task.score("So \\boxed{3} no, \\boxed{ 2 }.", sample) == {"accuracy": 1.0}
    assert task.score("2", sample) == {"accuracy": 0.0}


@pytest.mark.parametrize("make, missing, fix", [
    (lambda root: RulerTask(root, tasks=["niah_single_1"]), "niah_single_1/validation.jsonl", "NVIDIA/RULER"),
    (lambda root: RulerTask(root), "", "NVIDIA/RULER"),
    (lambda root: LongBenchTask(root, ["qasper"], {"qasper": 128}), "qasper.jsonl", "THUDM/LongBench"),
    (lambda root: LoogleTask(root), "shortdep_qa.jsonl", "bigainlco/LooGLE"),
    (lambda root: ZeroScrollsTask(root, ["qasper"]), "qasper/validation.jsonl", "tau/zero_scrolls"),
    (lambda root: Math500Task(root), "test.jsonl", "HuggingFaceH4/MATH-500"),
])
def test_missing_files_name_the_path_and_the_fix(tmp_path, make, missing, fix):
    root = tmp_path / "absent"
    with pytest.raises(DataNotFoundError, match=f"{root}/?{missing}.*{fix}"):
        make(root).samples(tokenizer=None)


def test_missing_field_is_named(tmp_path):
    write_jsonl(tmp_path / "test.jsonl", [{"question": "1+1?", "answer": "2"}])
    with pytest.raises(DataNotFoundError, match="test.jsonl:1 lacks the field.s. problem"):
        Math500Task(tmp_path).samples(tokenizer=None)


def test_metrics():
    assert exact_match("The Eiffel Tower!", ["eiffel tower"]) == 1.0
    assert token_f1("the red car", ["a red bus"]) == 0.5
    assert contains_fraction("alpha gamma", ["alpha", "beta"]) == 0.5
    assert last_boxed("\\boxed{\\frac{1}{2}}") == "\\frac{1}{2}" and last_boxed("none") is None


def test_rouge_scores_by_hand():
    """Rouge-L F: longest common subsequence alpha beta delta, 3 of 4 tokens each way -> 0.75; an empty
    prediction scores 0 (LongBench). Rouge-1 F with the Porter stemmer: cats/cat and sitting/sits
    match, 2 of 3 tokens each way -> 2/3, where unstemmed unigram F1 finds nothing."""
    assert rouge_l("alpha beta gamma delta", ["zeta", "alpha beta epsilon delta"]) == pytest.approx(0.75, abs=1e-6)
    assert rouge_l("", ["alpha beta"]) == 0.0
    assert rouge_1("the cat sits", ["cats are sitting"]) == pytest.approx(2 / 3)
    assert token_f1("the cat sits", ["cats are sitting"]) == 0.0

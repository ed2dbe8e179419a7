"""Text chunks for the analyses: BOS first, consecutive text tokens (those of a whole-file tokenization,
reading no further than needed), clear errors naming path and source."""

import json

import pytest
import torch

from thesis.core.errors import DataNotFoundError
from thesis.kvcache.analysis.chunks import text_chunks


class WordTokenizer:
    """One id per word (its length), BOS = 0."""

    bos_token_id = 0

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [len(word) for word in text.split()]}


def test_jsonl_chunks_start_with_bos_and_follow_the_text(tmp_path):
    path = tmp_path / "chunks.jsonl"
    path.write_text("\n".join(json.dumps({"body": " ".join("x" * n for n in range(1, 8))}) for _ in range(2)) + "\n")
    chunks = text_chunks(WordTokenizer(), path, n_chunks=3, chunk_length=4, text_field="body")
    assert chunks.tolist() == [[0, 1, 2, 3], [0, 4, 5, 6], [0, 7, 1, 2]]


def test_plain_text_file(tmp_path):
    path = tmp_path / "text.txt"
    path.write_text("a bb ccc dddd")
    assert torch.equal(text_chunks(WordTokenizer(), path, 1, 5), torch.tensor([[0, 1, 2, 3, 4]]))


def test_missing_file_short_file_and_missing_field_are_reported(tmp_path):
    with pytest.raises(DataNotFoundError, match="nowhere.jsonl.*Wikipedia"):
        text_chunks(WordTokenizer(), tmp_path / "nowhere.jsonl", 1, 4, source="Wikipedia 20220301.en")
    short = tmp_path / "short.txt"
    short.write_text("a b c")
    with pytest.raises(DataNotFoundError, match="yields 1 chunks"):
        text_chunks(WordTokenizer(), short, 2, 4)
    record = tmp_path / "record.jsonl"
    record.write_text(json.dumps({"context": "a"}) + "\n")
    with pytest.raises(DataNotFoundError, match="text_field"):
        text_chunks(WordTokenizer(), record, 1, 2)


def test_jsonl_records_past_the_needed_tokens_are_not_read(tmp_path):
    path = tmp_path / "lazy.jsonl"
    path.write_text(json.dumps({"text": "a bb ccc dddd"}) + "\n" + "{not json, never parsed\n")
    assert text_chunks(WordTokenizer(), path, 1, 5).tolist() == [[0, 1, 2, 3, 4]]
    with pytest.raises(json.JSONDecodeError):
        text_chunks(WordTokenizer(), path, 2, 5)


def test_plain_text_chunks_follow_a_whole_file_tokenization(tmp_path):
    path = tmp_path / "long.txt"
    words = [" ".join("x" * (1 + (i * 7 + j) % 9) for j in range(1 + i % 5)) for i in range(2000)]
    path.write_text("\n".join(words))
    whole = WordTokenizer()(path.read_text())["input_ids"]
    chunks = text_chunks(WordTokenizer(), path, n_chunks=30, chunk_length=11)
    assert torch.equal(chunks[:, 1:].flatten(), torch.tensor(whole[:300]))
    assert (chunks[:, 0] == 0).all()

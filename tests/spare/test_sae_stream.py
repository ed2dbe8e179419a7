"""Streaming SAE training (thesis 5.1.8 at scale): a planted dictionary is recovered from successive
buffers, each visited once; the corpus reader and the EOS-joined fixed-length token windows."""

import gzip
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from thesis.core.errors import DataNotFoundError
from thesis.spare.sae_io import load_eleuther, save_eleuther
from thesis.spare.sae_stream import StreamingSAETrainer
from thesis.spare.sae_train_runner import batches, documents, token_sequences

from .planted import planted


def test_streaming_trainer_recovers_a_planted_dictionary_one_pass_per_buffer(tmp_path):
    data, atoms = planted(6000)
    trainer = StreamingSAETrainer(n=64, k=3, batch_size=64, lr=3e-3, seed=0)
    for _ in range(3):  # three epochs, buffer by buffer
        for buffer in data.split(1000):
            trainer.fit_buffer(buffer)
    sae = trainer.result()
    assert trainer.tokens == 3 * len(data)
    assert len(trainer.losses) == 3 * 6 * math.ceil(1000 / 64)
    assert np.mean(trainer.losses[-10:]) < 0.5 * np.mean(trainer.losses[:10])
    assert sae.fvu(data) < 0.15
    assert ((sae.encode(data) > 0).sum(1) <= 3).all()
    assert torch.allclose(sae.W_dec.norm(dim=1), torch.ones(64), atol=1e-4)
    assert ((atoms @ sae.W_dec.detach().T).max(1).values > 0.9).float().mean() > 0.8
    loaded = load_eleuther(save_eleuther(sae, tmp_path / "layers.3"))
    assert torch.allclose(loaded.encode(data[:50]), sae.encode(data[:50]))


def test_streaming_trainer_without_data_names_the_corpus():
    with pytest.raises(ValueError, match="no activations"):
        StreamingSAETrainer(n=8, k=2).result()


class CharTokenizer:
    """One id per character (ord), EOS = 0."""

    eos_token_id = 0

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [ord(c) for c in text]}


def test_token_windows_join_documents_with_eos_and_drop_the_tail():
    windows = list(token_sequences(CharTokenizer(), ["abc", "de", "fghij"], ctx_len=4))
    flat = [97, 98, 99, 0, 100, 101, 0, 102, 103, 104, 105, 106, 0]
    assert windows == [flat[0:4], flat[4:8], flat[8:12]]
    assert [b.shape for b in batches(iter(windows), 2)] == [(2, 4), (1, 4)]


def test_documents_read_jsonl_gzip_and_parquet_in_name_order(tmp_path):
    (tmp_path / "a.jsonl").write_text(json.dumps({"raw_content": "one"}) + "\n\n" + json.dumps({"raw_content": "two"}))
    with gzip.open(tmp_path / "b.jsonl.gz", "wt") as handle:
        handle.write(json.dumps({"raw_content": "three"}) + "\n")
    pd.DataFrame({"raw_content": ["four"]}).to_parquet(tmp_path / "c.parquet")
    assert list(documents(tmp_path, "*", "raw_content")) == ["one", "two", "three", "four"]
    with pytest.raises(DataNotFoundError, match="no corpus files"):
        list(documents(tmp_path / "missing", "*.jsonl", "raw_content"))

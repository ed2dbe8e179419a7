"""Offline fixtures: built once, atomically, in formats the real loaders read back."""

import csv

import pytest
import torch

from thesis.core import fixtures
from thesis.core.errors import ConfigError
from thesis.core.models import create_timm_model, load_hf_causal_lm, load_hf_tokenizer


def test_unknown_fixture_lists_the_valid_ones(tmp_path):
    with pytest.raises(ConfigError, match="valid fixtures: .*imagefolder_tiny"):
        fixtures.materialize("nope", tmp_path)


def test_built_once_and_reused(tmp_path):
    first = fixtures.materialize("imagefolder_tiny", tmp_path)
    stamp = (first / "train" / "class_a" / "000.png").stat().st_mtime_ns
    assert fixtures.materialize("imagefolder_tiny", tmp_path) == first
    assert (first / "train" / "class_a" / "000.png").stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == ["imagefolder_tiny"]  # no staging left behind


def test_failed_build_leaves_nothing(tmp_path, monkeypatch):
    def broken(out):
        (out / "half").write_text("x")
        raise RuntimeError("boom")

    monkeypatch.setitem(fixtures._BUILDERS, "broken", broken)
    with pytest.raises(RuntimeError):
        fixtures.materialize("broken", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_imagefolder_reads_through_the_datamodule(tmp_path):
    from thesis.core.data import ImageFolderDataModule

    dm = ImageFolderDataModule(str(fixtures.materialize("imagefolder_tiny", tmp_path)), image_size=32, batch_size=4)
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (4, 3, 32, 32) and dm.num_classes == 3
    assert len(dm.splits["train"]) == 24 and len(dm.splits["val"]) == 12


def test_timm_fixture_round_trip(tmp_path):
    import timm
    from safetensors.torch import load_file

    path = fixtures.materialize("timm_vit_tiny", tmp_path)
    model = create_timm_model("ignored", checkpoint=str(path)).eval()
    reference = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=32, depth=2,
                                  num_heads=2, num_classes=3).eval()
    reference.load_state_dict(load_file(str(path / "model.safetensors")))
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(model(x), reference(x))


def test_llama_fixture_round_trip(tmp_path):
    path = fixtures.materialize("hf_llama_tiny", tmp_path)
    model, tokenizer = load_hf_causal_lm(str(path)), load_hf_tokenizer(str(path))
    ids = tokenizer("the cache key value", return_tensors="pt").input_ids
    assert tokenizer.decode(ids[0]) == "the cache key value"
    assert model.config.num_key_value_heads == 2
    assert model(ids).logits.shape == (1, ids.shape[1], len(tokenizer))


def test_commonvoice_fixture_reads_with_soundfile(tmp_path):
    sf = pytest.importorskip("soundfile")
    path = fixtures.materialize("commonvoice_tiny", tmp_path)
    with open(path / "train.tsv") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    assert len(rows) == 4 and {"client_id", "path", "sentence"} <= set(rows[0])
    audio, rate = sf.read(path / "clips" / rows[0]["path"])
    assert rate == 16000 and audio.ndim == 1 and len(audio) == 8000

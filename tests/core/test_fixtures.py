"""Offline fixtures: built once, atomically, deterministically, in formats the real loaders read."""

import csv
import hashlib

import pytest
import torch

from thesis.core import fixtures
from thesis.core.errors import ConfigError
from thesis.core.models import create_timm_model, load_hf_causal_lm, load_hf_tokenizer


def digest(folder) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_registry_lists_the_fixtures():
    expected = {"imagefolder_tiny", "timm_vit_tiny", "timm_resnet_tiny", "hf_llama_tiny", "commonvoice_tiny",
                "kv_benchmarks_tiny"}
    assert expected <= set(fixtures.names())


def test_unknown_fixture_lists_the_valid_ones(tmp_path):
    with pytest.raises(ConfigError, match="valid fixtures: .*imagefolder_tiny"):
        fixtures.materialize("nope", tmp_path)


def test_built_once_and_reused(tmp_path):
    first = fixtures.materialize("imagefolder_tiny", tmp_path)
    stamp = (first / "train" / "class_a" / "000.png").stat().st_mtime_ns
    assert fixtures.materialize("imagefolder_tiny", str(tmp_path)) == first == tmp_path / "imagefolder_tiny"
    assert (first / "train" / "class_a" / "000.png").stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == ["imagefolder_tiny"]  # no staging dir left behind


def test_failed_build_leaves_nothing(tmp_path, monkeypatch):
    def broken(out):
        (out / "half").write_text("x")
        raise RuntimeError("boom")

    monkeypatch.setitem(fixtures._BUILDERS, "broken", broken)
    with pytest.raises(RuntimeError):
        fixtures.materialize("broken", tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["imagefolder_tiny", "timm_vit_tiny", "timm_resnet_tiny", "commonvoice_tiny"])
def test_deterministic_and_leaves_the_global_rng_alone(tmp_path, name):
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    first = digest(fixtures.materialize(name, tmp_path / "a"))
    assert torch.equal(torch.rand(1), expected_next)
    assert first == digest(fixtures.materialize(name, tmp_path / "b"))


def test_imagefolder_reads_with_torchvision(tmp_path):
    from torchvision.datasets import ImageFolder
    from torchvision.transforms.functional import pil_to_tensor

    root = fixtures.materialize("imagefolder_tiny", tmp_path)
    train, val = ImageFolder(root / "train"), ImageFolder(root / "val")
    assert train.classes == val.classes == list(fixtures.IMAGE_CLASSES)
    assert len(train) == 24 and len(val) == 12
    image, label = train[len(train) - 1]
    pixels = pil_to_tensor(image).float()
    assert pixels.shape == (3, 32, 32) and label == 2
    assert pixels.mean((1, 2)).argmax() == label  # the class is learnable: its channel dominates


@pytest.mark.parametrize("name,architecture,shape", [
    ("timm_vit_tiny", "vit_tiny_patch16_224", (2, 3, 32, 32)),
    ("timm_resnet_tiny", "resnet18", (2, 3, 32, 32)),
])
def test_timm_fixture_round_trip(tmp_path, name, architecture, shape):
    import json

    import timm
    from safetensors.torch import load_file

    path = fixtures.materialize(name, tmp_path)
    model = create_timm_model(architecture, checkpoint=str(path)).eval()
    args = json.loads((path / "config.json").read_text())["model_args"]
    reference = timm.create_model(architecture, pretrained=False, **args).eval()
    reference.load_state_dict(load_file(str(path / "model.safetensors")))
    x = torch.rand(shape)
    with torch.no_grad():
        assert model(x).shape == (2, 3)
        assert torch.equal(model(x), reference(x))


def test_llama_fixture_round_trip(tmp_path):
    path = fixtures.materialize("hf_llama_tiny", tmp_path)
    model, tokenizer = load_hf_causal_lm(path), load_hf_tokenizer(str(path))
    ids = tokenizer("the cache key value", return_tensors="pt").input_ids
    assert tokenizer.decode(ids[0]) == "the cache key value"
    config = model.config
    shape = (config.num_hidden_layers, config.hidden_size, config.num_attention_heads, config.num_key_value_heads)
    assert shape == (2, 64, 4, 2)
    with torch.no_grad():
        assert model(ids).logits.shape == (1, ids.shape[1], len(tokenizer))
    assert sorted(p.name for p in path.glob("*.safetensors")) == ["model.safetensors"]


def test_wav_fixture_reads_with_soundfile_and_csv(tmp_path):
    import soundfile as sf

    path = fixtures.materialize("commonvoice_tiny", tmp_path)
    splits = {}
    for split in ("train", "dev", "test"):
        with open(path / f"{split}.tsv", newline="") as handle:
            splits[split] = list(csv.DictReader(handle, delimiter="\t"))
    assert {k: len(v) for k, v in splits.items()} == {"train": 4, "dev": 2, "test": 2}
    assert list(splits["train"][0]) == list(fixtures.COMMONVOICE_COLUMNS)
    for row in splits["train"]:
        audio, rate = sf.read(path / "clips" / row["path"])
        assert rate == fixtures.SAMPLE_RATE and audio.ndim == 1 and len(audio) >= rate // 2
        assert row["sentence"]

"""Checkpoint loading: state dicts, timm checkpoints, HF dirs; failures name the file and the fix."""

import shutil

import pytest
import torch
from torch import nn

from thesis.core import fixtures
from thesis.core.errors import CheckpointError
from thesis.core.models import (create_timm_model, load_hf_causal_lm, load_hf_tokenizer, load_state_dict,
                                load_weights)


def test_torch_and_safetensors_round_trip(tmp_path):
    from safetensors.torch import save_file

    state = {"w": torch.arange(6.0).reshape(2, 3)}
    torch.save(state, tmp_path / "a.pt")
    torch.save({"state_dict": state, "epoch": 3}, tmp_path / "lightning.ckpt")
    save_file(state, str(tmp_path / "a.safetensors"))
    for name in ("a.pt", "lightning.ckpt", "a.safetensors"):
        assert torch.equal(load_state_dict(tmp_path / name)["w"], state["w"])


@pytest.mark.parametrize("name", ["a.pt", "a.safetensors"])
def test_corrupt_checkpoint(tmp_path, name):
    (tmp_path / name).write_bytes(b"\x00not a checkpoint")
    with pytest.raises(CheckpointError, match=f"{name} is corrupt .*: delete it and regenerate"):
        load_state_dict(tmp_path / name)


def test_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="nope.pt not found"):
        load_state_dict(tmp_path / "nope.pt")


def test_pickled_code_is_refused(tmp_path):
    torch.save({"w": torch.zeros(1), "obj": object()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="corrupt or not a safetensors/torch file"):
        load_state_dict(tmp_path / "evil.pt")


def test_wrong_architecture_names_the_mismatch(tmp_path):
    torch.save(nn.Linear(4, 3).state_dict(), tmp_path / "lin.pt")
    with pytest.raises(CheckpointError, match=r"another architecture .*shape weight \(3, 4\) vs \(2, 4\)"):
        load_weights(nn.Linear(4, 2), tmp_path / "lin.pt")
    with pytest.raises(CheckpointError, match="missing 0.bias, 0.weight; unexpected bias, weight"):
        load_weights(nn.Sequential(nn.Linear(4, 3)), tmp_path / "lin.pt")


@pytest.fixture(scope="module")
def vit_dir(tmp_path_factory):
    return fixtures.materialize("timm_vit_tiny", tmp_path_factory.mktemp("fixtures"))


def test_timm_weight_file_with_arguments(vit_dir):
    """A bare weights file plus the arguments it was made with loads the same as the directory."""
    args = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=3)
    from_file = create_timm_model("vit_tiny_patch16_224", checkpoint=str(vit_dir / "model.safetensors"), **args)
    from_dir = create_timm_model("vit_tiny_patch16_224", checkpoint=str(vit_dir))
    for (key, a), b in zip(from_file.state_dict().items(), from_dir.state_dict().values()):
        assert torch.equal(a, b), key


def test_timm_dir_without_pretrained_cfg(tmp_path, vit_dir):
    """A minimal hand-written config.json (architecture, num_classes, model_args) keeps the trained head."""
    import json

    minimal = shutil.copytree(vit_dir, tmp_path / "minimal")
    config = json.loads((vit_dir / "config.json").read_text())
    kept = ("architecture", "num_classes", "model_args")
    (minimal / "config.json").write_text(json.dumps({k: config[k] for k in kept}))
    head = create_timm_model("vit_tiny_patch16_224", checkpoint=str(minimal)).head.weight
    assert torch.equal(head, create_timm_model("vit_tiny_patch16_224", checkpoint=str(vit_dir)).head.weight)


def test_timm_checkpoint_new_head(vit_dir):
    """As with hub weights, asking for another number of classes keeps the body and a fresh head."""
    model = create_timm_model("vit_tiny_patch16_224", checkpoint=str(vit_dir), num_classes=5)
    reference = create_timm_model("vit_tiny_patch16_224", checkpoint=str(vit_dir))
    assert model.head.out_features == 5
    assert torch.equal(model.blocks[1].mlp.fc2.weight, reference.blocks[1].mlp.fc2.weight)


def test_timm_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match=r"missing\.safetensors not found: check model.checkpoint"):
        create_timm_model("vit_tiny_patch16_224", checkpoint=str(tmp_path / "missing.safetensors"))


def test_timm_corrupt_checkpoint(tmp_path, vit_dir):
    broken = shutil.copytree(vit_dir, tmp_path / "broken")
    (broken / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match=r"broken/model.safetensors is corrupt"):
        create_timm_model("vit_tiny_patch16_224", checkpoint=str(broken))


def test_timm_wrong_architecture(tmp_path, vit_dir):
    resnet = fixtures.materialize("timm_resnet_tiny", tmp_path)
    with pytest.raises(CheckpointError, match=r"made for another architecture than vit_tiny_patch16_224 "
                                              r"\(missing .*; unexpected .*\): check model.name"):
        create_timm_model("vit_tiny_patch16_224", checkpoint=str(resnet / "model.safetensors"), img_size=32,
                          patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=3)
    with pytest.raises(CheckpointError, match=r"\(shape cls_token \(1, 1, 32\) vs \(1, 1, 48\), .* \(\+\d+\)\)"):
        create_timm_model("vit_tiny_patch16_224", checkpoint=str(vit_dir / "model.safetensors"), img_size=32,
                          patch_size=8, embed_dim=48, depth=2, num_heads=2, num_classes=3)


def test_timm_hub_weights_offline_say_what_to_do(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError, match="not in the local cache and the machine is offline: .* local path"):
        create_timm_model("vit_tiny_patch16_224", pretrained=True)


def test_hub_name_offline_says_what_to_do(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for load in (load_hf_causal_lm, load_hf_tokenizer):
        with pytest.raises(CheckpointError, match="'some-org/not-cached' is not in the local cache and the "
                                                  "machine is offline: download it .* pass a local path"):
            load("some-org/not-cached")


def test_hf_missing_and_corrupt_local_dirs(tmp_path):
    with pytest.raises(CheckpointError, match="model directory .*nowhere not found"):
        load_hf_causal_lm(tmp_path / "nowhere")
    llama = fixtures.materialize("hf_llama_tiny", tmp_path)
    (llama / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="hf_llama_tiny is not a loadable model directory .*: regenerate"):
        load_hf_causal_lm(llama)


def test_unknown_auto_class_is_a_config_error():
    from thesis.core.errors import ConfigError
    from thesis.core.models import load_hf_causal_lm

    with pytest.raises(ConfigError, match="auto_class"):
        load_hf_causal_lm("unused", auto_class="AutoNothing")

"""Checkpoint loading fails with one line that names the file and the fix."""

import pytest
import torch
from torch import nn

from thesis.core.errors import CheckpointError
from thesis.core.models import load_hf_causal_lm, load_state_dict, load_weights


def test_torch_and_safetensors_round_trip(tmp_path):
    from safetensors.torch import save_file

    state = {"w": torch.arange(6.0).reshape(2, 3)}
    torch.save(state, tmp_path / "a.pt")
    save_file(state, str(tmp_path / "a.safetensors"))
    assert torch.equal(load_state_dict(tmp_path / "a.pt")["w"], state["w"])
    assert torch.equal(load_state_dict(tmp_path / "a.safetensors")["w"], state["w"])


@pytest.mark.parametrize("name", ["a.pt", "a.safetensors"])
def test_corrupt_checkpoint(tmp_path, name):
    (tmp_path / name).write_bytes(b"\x00not a checkpoint")
    with pytest.raises(CheckpointError, match=f"{name} is corrupt .*: delete it and regenerate"):
        load_state_dict(tmp_path / name)


def test_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
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


def test_hub_name_offline_says_what_to_do(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError, match="not in the local cache .* pass the local path"):
        load_hf_causal_lm("some-org/not-a-cached-model")


def test_timm_hub_weights_offline_say_what_to_do(monkeypatch):
    from thesis.core.models import create_timm_model

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError, match="not in the local cache .* as model.checkpoint"):
        create_timm_model("vit_tiny_patch16_224", pretrained=True)

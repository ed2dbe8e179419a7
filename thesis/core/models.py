"""Model loading shared by every scale: timm and transformers models from the hub or local files.

Paper scale asks the hub (`pretrained=True`, a model id); smoke scale passes a local checkpoint
(a fixture directory written by `thesis.core.fixtures`) to the same functions. Failures say in
one line which file is wrong and what to do about it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from thesis.core.errors import CheckpointError

OFFLINE_HINT = "download it on a machine with internet access (or copy the files here) and pass the local path"


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a `.safetensors` file or a torch checkpoint (`weights_only=True`, never pickle code)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found: check the path or regenerate it")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - every reader failure means the same thing to the user
        raise CheckpointError(f"checkpoint {path} is corrupt or not a safetensors/torch file "
                              f"({type(exc).__name__}): delete it and regenerate or re-download it") from None
    return state.get("state_dict", state) if isinstance(state, dict) else state


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load a checkpoint into `model`, strictly; a mismatch names the first differing keys/shapes."""
    state = load_state_dict(path)
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    reshaped = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
                if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or reshaped:
        details = "; ".join(filter(None, [
            f"missing {', '.join(missing[:3])}" if missing else "",
            f"unexpected {', '.join(unexpected[:3])}" if unexpected else "",
            f"shape {', '.join(reshaped[:3])}" if reshaped else "",
        ]))
        raise CheckpointError(f"checkpoint {path} was made for another architecture than "
                              f"{type(model).__name__} ({details}): check model.name and its arguments")
    model.load_state_dict(state)
    return model


def create_timm_model(name: str, pretrained: bool = False, checkpoint: str | None = None, **kwargs: Any) -> nn.Module:
    """A timm model: hub weights if `pretrained`, or local weights from `checkpoint`.

    `checkpoint` is a weights file or a directory holding `model.safetensors` and a timm-style
    `config.json` ({"architecture", "model_args"}); the directory's arguments fill in `kwargs`.
    """
    import timm

    if checkpoint is not None:
        path = Path(checkpoint)
        if path.is_dir():
            config_file = path / "config.json"
            config = json.loads(config_file.read_text()) if config_file.is_file() else {}
            name = config.get("architecture", name)
            kwargs = {**config.get("model_args", {}), **kwargs}
            path = path / "model.safetensors"
        return load_weights(timm.create_model(name, pretrained=False, **kwargs), path)
    try:
        return timm.create_model(name, pretrained=pretrained, **kwargs)
    except (OSError, RuntimeError) as exc:
        if not pretrained or "offline" not in str(exc).lower() and "connect" not in str(exc).lower():
            raise
        raise CheckpointError(f"weights of timm model {name!r} are not in the local cache and the hub "
                              f"is unreachable: {OFFLINE_HINT} as model.checkpoint") from None


def _from_pretrained(loader, path_or_name: str, **kwargs: Any):
    try:
        return loader.from_pretrained(path_or_name, **kwargs)
    except OSError as exc:
        if Path(path_or_name).exists():
            raise CheckpointError(f"{path_or_name} is not a loadable model directory ({exc})".splitlines()[0]) from None
        raise CheckpointError(f"{path_or_name!r} is not in the local cache and the hub is unreachable: "
                              f"{OFFLINE_HINT}") from None


def load_hf_causal_lm(path_or_name: str, dtype: str | torch.dtype = "auto", device_map: str | None = None):
    """`AutoModelForCausalLM.from_pretrained` with the project's offline error."""
    from transformers import AutoModelForCausalLM

    return _from_pretrained(AutoModelForCausalLM, path_or_name, dtype=dtype, device_map=device_map)


def load_hf_tokenizer(path_or_name: str):
    """`AutoTokenizer.from_pretrained` with the project's offline error."""
    from transformers import AutoTokenizer

    return _from_pretrained(AutoTokenizer, path_or_name)

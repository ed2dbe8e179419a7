"""Model loading shared by every scale: timm and transformers models from the hub or local files.

Paper scale asks the hub (`pretrained=True`, a model id); smoke scale passes a local checkpoint
(a fixture directory written by `thesis.core.fixtures`) to the same functions, which load it
through the libraries' own pretrained-weights code (timm's `pretrained_cfg_overlay=dict(file=...)`,
transformers' `from_pretrained`). Failures raise `CheckpointError` with one line that names the
file or model and the fix.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from thesis.core.errors import CheckpointError, ConfigError

log = logging.getLogger(__name__)

OFFLINE = ("not in the local cache and the machine is offline: download it on a box with internet "
           "or pass a local path")
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a `.safetensors` file or a torch checkpoint (`weights_only=True`: never runs
    pickled code); a Lightning-style {"state_dict": ...} wrapper is unwrapped."""
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


def describe_mismatch(model: nn.Module, state: dict[str, torch.Tensor]) -> str:
    """The first few missing / unexpected / reshaped keys of `state` against `model`; "" if none."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    reshaped = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
                if k in state and state[k].shape != own[k].shape]
    parts = [f"{label} {', '.join(keys[:3])}" + (f" (+{len(keys) - 3})" if len(keys) > 3 else "")
             for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape", reshaped)) if keys]
    return "; ".join(parts)


def _wrong_architecture(path: Path, architecture: str, details: str) -> CheckpointError:
    return CheckpointError(f"checkpoint {path} was made for another architecture than {architecture} "
                           f"({details}): check model.name and its arguments")


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load a checkpoint into `model`, strictly; a mismatch names the first differing keys/shapes."""
    state = load_state_dict(path)
    details = describe_mismatch(model, state)
    if details:
        raise _wrong_architecture(Path(path), type(model).__name__, details)
    model.load_state_dict(state)
    return model


def create_timm_model(name: str, pretrained: bool = False, checkpoint: str | None = None, **kwargs: Any) -> nn.Module:
    """A timm model: hub weights if `pretrained`, local weights if `checkpoint`, else random init.

    `checkpoint` is a weights file (made for `name` with these `kwargs`) or a directory in timm's
    hub layout (`model.safetensors` + `config.json` with architecture, model_args and
    pretrained_cfg, as `timm.models.save_for_hf` writes it); the directory's architecture and
    arguments win over `name`, explicit `kwargs` over its arguments (a different `num_classes`
    re-initialises the head, as timm does for hub weights). `checkpoint` wins over `pretrained`.
    """
    import timm

    if checkpoint is not None:
        return _timm_from_checkpoint(name, Path(checkpoint), kwargs)
    try:
        return timm.create_model(name, pretrained=pretrained, **kwargs)
    except OSError as exc:
        if not (pretrained and _is_offline_error(exc)):
            raise
        raise CheckpointError(f"weights of timm model {name!r} are {OFFLINE} as model.checkpoint") from None


def _read_timm_dir(name: str, folder: Path, kwargs: dict[str, Any]) -> tuple[str, Path, dict[str, Any], dict[str, Any]]:
    """Architecture, weight file, model arguments and pretrained_cfg overlay of a timm hub-layout dir."""
    config_file = folder / "config.json"
    try:
        config = json.loads(config_file.read_text()) if config_file.is_file() else {}
    except (ValueError, UnicodeDecodeError):
        raise CheckpointError(f"{config_file} is not valid JSON: delete the directory and regenerate it") from None
    architecture = config.get("architecture", name)
    if architecture != name:
        log.info("checkpoint %s holds a %s; using it instead of %s", folder, architecture, name)
    weights = next((folder / f for f in _WEIGHT_FILES if (folder / f).is_file()), folder / _WEIGHT_FILES[0])
    pretrained_cfg = config.get("pretrained_cfg", {})
    num_classes = pretrained_cfg.get("num_classes", config.get("num_classes"))  # else timm drops the head
    overlay = {**pretrained_cfg, "file": str(weights), **({} if num_classes is None else {"num_classes": num_classes})}
    return architecture, weights, {**config.get("model_args", {}), **kwargs}, overlay


def _timm_from_checkpoint(name: str, path: Path, kwargs: dict[str, Any]) -> nn.Module:
    """Local weights through timm's own pretrained loading (checkpoint filters, head/stem adaption)."""
    import timm

    if path.is_dir():
        name, weights, kwargs, overlay = _read_timm_dir(name, path, kwargs)
    else:
        weights = path
        overlay = {"file": str(path), **({"num_classes": kwargs["num_classes"]} if "num_classes" in kwargs else {})}
    if not weights.is_file():
        raise CheckpointError(f"checkpoint {weights} not found: check model.checkpoint or regenerate the fixture")
    try:
        return timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs)
    except Exception:  # noqa: BLE001 - diagnosed below, re-raised if it is not the checkpoint's fault
        state = load_state_dict(weights)  # raises CheckpointError if the file is unreadable
        with torch.device("meta"):
            details = describe_mismatch(timm.create_model(name, pretrained=False, **kwargs), state)
        if details:
            raise _wrong_architecture(weights, name, details) from None
        raise


def _is_offline_error(exc: BaseException | None) -> bool:
    """Whether the hub could not be reached (offline mode or no network), anywhere in the cause chain."""
    from urllib.error import URLError

    from huggingface_hub.errors import LocalEntryNotFoundError

    while exc is not None:
        if isinstance(exc, (LocalEntryNotFoundError, ConnectionError, URLError)):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _from_pretrained(loader: Any, path_or_name: str | Path, what: str, **kwargs: Any) -> Any:
    """`loader.from_pretrained` with the project's errors for bad local dirs and unreachable hubs."""
    from safetensors import SafetensorError

    local = Path(path_or_name).expanduser()
    if local.is_dir():
        try:
            return loader.from_pretrained(str(local), **kwargs)
        except (OSError, ValueError, SafetensorError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise CheckpointError(f"{local} is not a loadable {what} directory ({reason}): "
                                  "regenerate it with save_pretrained or re-download it") from None
    if local.is_absolute() or str(path_or_name).startswith("."):
        raise CheckpointError(f"{what} directory {local} not found: check the path")
    try:
        return loader.from_pretrained(str(path_or_name), **kwargs)
    except OSError as exc:
        if _is_offline_error(exc):
            raise CheckpointError(f"{what} {str(path_or_name)!r} is {OFFLINE}") from None
        raise CheckpointError(f"{what} {str(path_or_name)!r} could not be loaded from the hub "
                              f"({str(exc).splitlines()[0]}): check the model id and your access") from None


def load_hf_causal_lm(path_or_name: str | Path, dtype: str | torch.dtype = "auto",
                      device_map: str | None = None, auto_class: str = "AutoModelForCausalLM",
                      trust_remote_code: bool = False) -> nn.Module:
    """`<auto_class>.from_pretrained` (a local dir or a hub id) with the project's errors.

    Models published with their own modelling code (LLaDA, Dream) register it under `AutoModel`
    and need `trust_remote_code=True`; the default loads transformers' own causal LMs.
    """
    import transformers

    loader = getattr(transformers, auto_class, None)
    if loader is None or not hasattr(loader, "from_pretrained"):
        raise ConfigError(f"model.auto_class={auto_class!r} is not a transformers auto class: "
                          "use AutoModelForCausalLM or AutoModel")
    return _from_pretrained(loader, path_or_name, "model", dtype=dtype, device_map=device_map,
                            **({"trust_remote_code": True} if trust_remote_code else {}))


def load_hf_tokenizer(path_or_name: str | Path, trust_remote_code: bool = False) -> Any:
    """`AutoTokenizer.from_pretrained` (a local dir or a hub id) with the project's errors."""
    from transformers import AutoTokenizer

    return _from_pretrained(AutoTokenizer, path_or_name, "tokenizer",
                            **({"trust_remote_code": True} if trust_remote_code else {}))


@functools.lru_cache(maxsize=None)
def _cache_argument(model_class: type) -> str:
    parameters = inspect.signature(model_class.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


def with_cache(model: nn.Module, cache: Any) -> dict[str, Any]:
    """The keyword that hands `cache` to a transformers model's forward: `cache` in the releases that
    renamed it, `past_key_values` in the 5.x releases before (both are in the supported range)."""
    return {_cache_argument(type(model)): cache}

"""Reading and writing SAEs in their published on-disk formats.

- `eleuther`: EleutherAI/sae layout, one folder per hookpoint (`layers.{i}/cfg.json` with
  `k`, `num_latents`/`expansion_factor`, `d_in`; `layers.{i}/sae.safetensors` with
  `encoder.weight` (n, d), `encoder.bias` (n), `W_dec` (n, d), `b_dec` (d)). TopK.
  The authors' Llama2-7B SAEs and EleutherAI/sae-llama-3-8b-32x use it; the SAEs trained here are
  written in it too.
- `gemmascope`: GemmaScope `params.npz` (or `params.safetensors`) with `W_enc` (d, n), `W_dec`
  (n, d), `b_enc`, `b_dec`, `threshold`; JumpReLU, no decoder bias subtracted from the input.
- `saelens`: SAELens folder, `cfg.json` (`d_in`, `d_sae`, `architecture` standard | topk |
  jumprelu, `apply_b_dec_to_input`, `activation_fn_kwargs.k`) + `sae_weights.safetensors` with
  SAELens names (`W_enc` (d, n), `W_dec`, `b_enc`, `b_dec`, `threshold`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from thesis.core.errors import CheckpointError, ConfigError
from thesis.spare.sae import SparseAutoencoder

FORMATS = ("eleuther", "gemmascope", "saelens")


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"SAE weights {path} not found: download the SAE (README: 'SAEs') or fix sae.path")
    try:
        if path.suffix == ".npz":
            with np.load(path) as arrays:
                return {k: torch.from_numpy(np.asarray(arrays[k], dtype=np.float32)) for k in arrays.files}
        from safetensors.torch import load_file

        return {k: v.float() for k, v in load_file(str(path)).items()}
    except (OSError, ValueError, KeyError) as exc:
        raise CheckpointError(f"SAE weights {path} are unreadable ({type(exc).__name__}): re-download them") from None


def _read_cfg(path: Path) -> dict:
    if not path.is_file():
        raise CheckpointError(f"SAE config {path} not found: download the SAE (README: 'SAEs') or fix sae.path")
    try:
        return json.loads(path.read_text())
    except ValueError:
        raise CheckpointError(f"SAE config {path} is not valid JSON: re-download it") from None


def _fill(sae: SparseAutoencoder, **tensors: torch.Tensor) -> SparseAutoencoder:
    with torch.no_grad():
        for name, value in tensors.items():
            target = getattr(sae, name)
            if target.shape != value.shape:
                raise CheckpointError(f"SAE tensor {name} has shape {tuple(value.shape)}, expected "
                                      f"{tuple(target.shape)}: the file belongs to another SAE")
            target.copy_(value)
    return sae


def load_eleuther(folder: str | Path) -> SparseAutoencoder:
    folder = Path(folder)
    cfg = _read_cfg(folder / "cfg.json")
    state = _tensors(folder / "sae.safetensors")
    n, d = state["W_dec"].shape
    sae = SparseAutoencoder(d, n, activation="topk", k=int(cfg["k"]))
    return _fill(sae, W_enc=state["encoder.weight"].T.contiguous(), b_enc=state["encoder.bias"],
                 W_dec=state["W_dec"], b_dec=state["b_dec"])


def save_eleuther(sae: SparseAutoencoder, folder: str | Path) -> Path:
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = {"expansion_factor": sae.n // sae.d, "normalize_decoder": True, "num_latents": sae.n, "k": sae.k,
           "multi_topk": False, "d_in": sae.d}
    (folder / "cfg.json").write_text(json.dumps(cfg, indent=2))
    save_file({"encoder.weight": sae.W_enc.detach().T.contiguous(), "encoder.bias": sae.b_enc.detach(),
               "W_dec": sae.W_dec.detach().contiguous(), "b_dec": sae.b_dec.detach()}, str(folder / "sae.safetensors"))
    return folder


def load_gemmascope(path: str | Path) -> SparseAutoencoder:
    path = Path(path)
    if path.is_dir():
        path = next((path / f for f in ("params.npz", "params.safetensors") if (path / f).is_file()),
                    path / "params.npz")
    state = _tensors(path)
    d, n = state["W_enc"].shape
    sae = SparseAutoencoder(d, n, activation="jumprelu", subtract_decoder_bias=False)
    return _fill(sae, W_enc=state["W_enc"], b_enc=state["b_enc"], W_dec=state["W_dec"], b_dec=state["b_dec"],
                 threshold=state["threshold"])


def load_saelens(folder: str | Path) -> SparseAutoencoder:
    folder = Path(folder)
    cfg = _read_cfg(folder / "cfg.json")
    state = _tensors(folder / "sae_weights.safetensors")
    architecture = cfg.get("architecture", "standard")
    activation = {"standard": "relu", "topk": "topk", "jumprelu": "jumprelu"}.get(architecture)
    if activation is None:
        raise CheckpointError(f"SAELens architecture {architecture!r} in {folder / 'cfg.json'} is not supported "
                              "(standard, topk, jumprelu)")
    k = (cfg.get("activation_fn_kwargs") or {}).get("k")
    sae = SparseAutoencoder(int(cfg["d_in"]), int(cfg["d_sae"]), activation=activation, k=k,
                            subtract_decoder_bias=bool(cfg.get("apply_b_dec_to_input", activation != "jumprelu")))
    tensors = {name: state[name] for name in ("W_enc", "b_enc", "W_dec", "b_dec")}
    if activation == "jumprelu":
        tensors["threshold"] = state["threshold"]
    return _fill(sae, **tensors)


def load_sae(fmt: str, path: str | Path) -> SparseAutoencoder:
    """An SAE from disk in one of FORMATS; a missing path names the format's expected files."""
    loaders = {"eleuther": load_eleuther, "gemmascope": load_gemmascope, "saelens": load_saelens}
    if fmt not in loaders:
        raise ConfigError(f"sae.format={fmt!r} is unknown: use one of {', '.join(FORMATS)}")
    if not Path(path).exists():
        raise CheckpointError(f"SAE {path} not found: download it (thesis/spare/README.md, 'SAEs') and point "
                              "sae.root at the folder holding one sub-folder per layer")
    return loaders[fmt](path).eval()

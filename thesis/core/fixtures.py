"""Named offline fixtures: tiny artefacts written in the real on-disk format of each source.

Smoke configs say `${fixture:<name>}`; the first use builds the fixture under `paths.fixture_dir`
and later uses reuse it. A fixture is built in a temporary sibling directory and renamed into
place, so an interrupted build never leaves a half-written fixture behind. Content is seeded.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

from thesis.core.errors import ConfigError

Builder = Callable[[Path], None]
_BUILDERS: dict[str, Builder] = {}


def fixture(name: str) -> Callable[[Builder], Builder]:
    """Register `builder(out_dir)` as the fixture `name`."""

    def register(builder: Builder) -> Builder:
        _BUILDERS[name] = builder
        return builder

    return register


def names() -> list[str]:
    return sorted(_BUILDERS)


def materialize(name: str, root: str | Path) -> Path:
    """`<root>/<name>`, built on first use (atomically) and reused afterwards."""
    if name not in _BUILDERS:
        raise ConfigError(f"unknown fixture {name!r}; valid fixtures: {', '.join(names())}")
    target = Path(root) / name
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{name}."))
    try:
        _BUILDERS[name](staging)
        os.replace(staging, target)
    except OSError:
        if not target.is_dir():  # not a concurrent build that finished first
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


@fixture("imagefolder_tiny")
def imagefolder_tiny(out: Path, size: int = 32, per_class: dict[str, int] | None = None) -> None:
    """`train/` and `val/` ImageFolder trees, 3 classes of PNGs whose dominant colour is the class."""
    from PIL import Image

    rng = np.random.default_rng(0)
    per_class = per_class or {"train": 8, "val": 4}
    for split, count in per_class.items():
        for label, cls in enumerate(("class_a", "class_b", "class_c")):
            folder = out / split / cls
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 80, (size, size, 3))
                pixels[..., label] += 150
                Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i:03d}.png")


@fixture("timm_vit_tiny")
def timm_vit_tiny(out: Path) -> None:
    """A random-init timm ViT of the vit_tiny family, shrunk: safetensors + timm-style config.json."""
    import timm
    import torch
    from safetensors.torch import save_file

    args = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2, "num_classes": 3}
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, **args)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / "model.safetensors"))
    config = {"architecture": "vit_tiny_patch16_224", "num_classes": args["num_classes"], "model_args": args}
    (out / "config.json").write_text(json.dumps(config, indent=2))


def _sentences(n: int, rng: np.random.Generator) -> list[str]:
    words = "the a model token cache key value query attention layer sink expert router budget".split()
    return [" ".join(rng.choice(words, size=rng.integers(4, 12))) for _ in range(n)]


@fixture("hf_llama_tiny")
def hf_llama_tiny(out: Path) -> None:
    """A 2-layer random-init Llama (GQA, 4 heads / 2 KV heads) and a byte-level BPE tokenizer,
    saved with `save_pretrained` so `from_pretrained(out)` loads both offline."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token=None))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    special = ["<s>", "</s>", "<pad>"]
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=special,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(_sentences(200, np.random.default_rng(0)), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    fast.save_pretrained(out)
    config = LlamaConfig(vocab_size=len(fast), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id,
                         pad_token_id=fast.pad_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(out, safe_serialization=True)


@fixture("commonvoice_tiny")
def commonvoice_tiny(out: Path, sample_rate: int = 16000) -> None:
    """A CommonVoice-style release: `clips/*.wav` (16 kHz mono tones) and `train.tsv`/`test.tsv`
    with CommonVoice's columns (client_id, path, sentence, up_votes, down_votes, age, gender, accents, locale)."""
    import soundfile as sf

    rng = np.random.default_rng(0)
    (out / "clips").mkdir()
    header = ["client_id", "path", "sentence", "up_votes", "down_votes", "age", "gender", "accents", "locale"]
    sentences = _sentences(6, rng)
    for split, ids in (("train", range(4)), ("test", range(4, 6))):
        rows = ["\t".join(header)]
        for i in ids:
            seconds = 0.5 + 0.25 * i
            t = np.arange(int(seconds * sample_rate)) / sample_rate
            sf.write(out / "clips" / f"clip_{i}.wav", 0.3 * np.sin(2 * np.pi * (200 + 50 * i) * t), sample_rate)
            rows.append("\t".join([f"speaker{i % 2}", f"clip_{i}.wav", sentences[i], "2", "0", "", "", "", "en"]))
        (out / f"{split}.tsv").write_text("\n".join(rows) + "\n")

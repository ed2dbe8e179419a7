"""Named offline fixtures: tiny artefacts written in the real on-disk format of each source.

Smoke configs say `${fixture:<name>}`; the first use builds the fixture under `paths.fixture_dir`
and later uses reuse it. A fixture is built in a temporary sibling directory and renamed into
place, so an interrupted build never leaves a half-written fixture behind. Content is seeded
(and the global torch RNG is left untouched), so two builds hold the same values.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np

from thesis.core.errors import ConfigError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

Builder = Callable[[Path], None]
_BUILDERS: dict[str, Builder] = {}

IMAGE_CLASSES = ("class_a", "class_b", "class_c")
SAMPLE_RATE = 16000
COMMONVOICE_COLUMNS = ("client_id", "path", "sentence", "up_votes", "down_votes", "age", "gender",
                       "accents", "locale", "segment")


def fixture(name: str) -> Callable[[Builder], Builder]:
    """Register `builder(out_dir)` as the fixture `name`; it writes into an existing empty dir."""

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
    staging.chmod(0o755)  # mkdtemp's 0700 would make the fixture private to its builder
    try:
        _BUILDERS[name](staging)
        os.replace(staging, target)
    except OSError:
        if not target.is_dir():  # not a concurrent build that finished first
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


@contextmanager
def _seeded_torch(seed: int = 0) -> Iterator[None]:
    """A torch RNG scope: builders draw seeded weights without moving the caller's RNG."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


@fixture("imagefolder_tiny")
def imagefolder_tiny(out: Path) -> None:
    """torchvision ImageFolder trees `train/` (8 per class) and `val/` (4 per class) of 32x32 PNGs;
    the class sets the dominant colour channel, so a model can learn something."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in (("train", 8), ("val", 4)):
        for label, cls in enumerate(IMAGE_CLASSES):
            folder = out / split / cls
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 80, (32, 32, 3))
                pixels[..., label] += 150
                Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i:03d}.png")


def _save_timm(out: Path, architecture: str, **model_args: object) -> None:
    """A random-init timm model saved by timm itself (`model.safetensors` + `config.json` with
    architecture, model_args and pretrained_cfg), the layout timm reads from the hub."""
    import timm
    from timm.models import save_for_hf

    with _seeded_torch():
        model = timm.create_model(architecture, pretrained=False, **model_args)
    save_for_hf(model, str(out), model_args=model_args, safe_serialization=True)


@fixture("timm_vit_tiny")
def timm_vit_tiny(out: Path) -> None:
    """timm's vit_tiny_patch16_224 shrunk: 32 px, patch 8, width 32, depth 2, 2 heads, 3 classes."""
    _save_timm(out, "vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2,
               num_classes=3)


@fixture("timm_resnet_tiny")
def timm_resnet_tiny(out: Path) -> None:
    """timm's resnet18 shrunk: one BasicBlock per stage, widths 8-16-32-64, 3 classes."""
    _save_timm(out, "resnet18", layers=[1, 1, 1, 1], channels=[8, 16, 32, 64], stem_width=8, num_classes=3)


def _sentences(n: int, rng: np.random.Generator) -> list[str]:
    words = "the a model token cache key value query attention layer sink expert router budget".split()
    return [" ".join(rng.choice(words, size=rng.integers(4, 12))) for _ in range(n)]


def _save_random_hf_model(out: Path, build: Callable[[], Any]) -> None:
    """`build()` drawn under the seeded RNG scope and written with `save_pretrained` (safetensors), so
    `from_pretrained(out)` loads it offline."""
    with _seeded_torch():
        model = build()
    with _no_progress_bars():
        model.save_pretrained(out, safe_serialization=True)


def _save_tokenizer(out: Path) -> PreTrainedTokenizerFast:
    """A byte-level BPE trained on generated sentences, saved as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token=None))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=["<s>", "</s>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(_sentences(200, np.random.default_rng(0)), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    fast.save_pretrained(out)
    return fast


@contextmanager
def _no_progress_bars() -> Iterator[None]:
    """Keep transformers' one-shard "Writing model shards" bar out of test and smoke logs."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


@fixture("hf_llama_tiny")
def hf_llama_tiny(out: Path) -> None:
    """A 2-layer random-init Llama (hidden 64, 4 heads / 2 KV heads) and its tokenizer, saved with
    `save_pretrained` (safetensors) so `from_pretrained(out)` loads both offline."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = _save_tokenizer(out)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    _save_random_hf_model(out, lambda: LlamaForCausalLM(config))


@fixture("commonvoice_tiny")
def commonvoice_tiny(out: Path) -> None:
    """A CommonVoice-style release with WAV clips: `clips/*.wav` (16 kHz mono tones, 0.5-1.75 s)
    and `train.tsv` (4 rows), `dev.tsv` and `test.tsv` (2 each) with CommonVoice's columns."""
    import soundfile as sf

    rng = np.random.default_rng(0)
    (out / "clips").mkdir()
    sentences = _sentences(8, rng)
    for split, ids in (("train", range(4)), ("dev", range(4, 6)), ("test", range(6, 8))):
        rows = ["\t".join(COMMONVOICE_COLUMNS)]
        for i in ids:
            seconds = 0.5 + 0.25 * (i % 6)
            t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
            tone = 0.3 * np.sin(2 * np.pi * (200 + 50 * i) * t) + 0.01 * rng.standard_normal(t.size)
            sf.write(out / "clips" / f"clip_{i}.wav", tone, SAMPLE_RATE, subtype="PCM_16")
            rows.append("\t".join([f"speaker{i % 2}", f"clip_{i}.wav", sentences[i], "2", "0", "", "", "", "en", ""]))
        (out / f"{split}.tsv").write_text("\n".join(rows) + "\n")


CTC_ALPHABET = "abcdefghijklmnopqrstuvwxyzáéíóúñü'"


@fixture("hf_wav2vec2_tiny")
def hf_wav2vec2_tiny(out: Path) -> None:
    """A random-init 2-layer Wav2Vec2ForCTC (hidden 32, XLS-R's layer-norm variant, one frame per 40
    samples so the fixture's fastest sentences still fit CTC) with a character CTC tokenizer (Spanish letters, "|" between words, "<pad>" = blank) and a
    feature extractor, saved with `save_pretrained` so `Wav2Vec2Processor.from_pretrained(out)`
    and `Wav2Vec2ForCTC.from_pretrained(out)` load offline."""
    import json

    from transformers import (Wav2Vec2Config, Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor, Wav2Vec2ForCTC,
                              Wav2Vec2Processor)

    vocab = {token: i for i, token in enumerate(["<pad>", "<s>", "</s>", "<unk>", "|", *CTC_ALPHABET])}
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    tokenizer = Wav2Vec2CTCTokenizer(str(out / "vocab.json"), bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                     pad_token="<pad>", word_delimiter_token="|")
    extractor = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=SAMPLE_RATE, padding_value=0.0,
                                         do_normalize=True, return_attention_mask=True)
    Wav2Vec2Processor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(out)
    config = Wav2Vec2Config(vocab_size=len(vocab), pad_token_id=vocab["<pad>"], hidden_size=32, num_hidden_layers=2,
                            num_attention_heads=2, intermediate_size=64, conv_dim=(32, 32), conv_kernel=(10, 8),
                            conv_stride=(10, 4), num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
                            feat_extract_norm="layer", do_stable_layer_norm=True, ctc_loss_reduction="mean",
                            mask_time_prob=0.0)
    _save_random_hf_model(out, lambda: Wav2Vec2ForCTC(config))


@fixture("kv_benchmarks_tiny")
def kv_benchmarks_tiny(out: Path) -> None:
    """Two records each of RULER (`ruler/<task>/validation.jsonl`), LongBench (`longbench/<dataset>.jsonl`)
    and LooGLE (`loogle/shortdep_qa.jsonl`), in their published layouts and field names, with short
    generated contexts, for the Chapter 4 benchmark readers."""
    import json

    def write(path: Path, records: list[dict]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(record) + "\n" for record in records))

    rng = np.random.default_rng(0)
    texts = [" ".join(_sentences(6, rng)) for _ in range(2)]
    write(out / "ruler" / "niah_single_1" / "validation.jsonl", [
        {"index": i, "input": f"A special magic number is hidden.\n{text} The number is {100 + i}.\n"
                              "What is the special magic number?",
         "outputs": [str(100 + i)], "length": len(text.split()), "answer_prefix": " The number is"}
        for i, text in enumerate(texts)])
    write(out / "longbench" / "hotpotqa.jsonl", [
        {"input": "Which token is named last?", "context": text, "answers": [text.split()[-1]], "length": 30,
         "dataset": "hotpotqa", "language": "en", "all_classes": None, "_id": f"h{i}"}
        for i, text in enumerate(texts)])
    write(out / "loogle" / "shortdep_qa.jsonl", [
        {"input": text, "title": f"doc{i}", "output": "none",
         "qa_pairs": [{"Q": "Which word comes first?", "A": text.split()[0], "S": [text.split(".")[0]]}]}
        for i, text in enumerate(texts)])


ATLAS_EWK_COLUMNS = ("pTj1", "etaj1", "phij1", "j1_quantile", "pTj2", "etaj2", "phij2", "j2_quantile",
                     "pTj3", "etaj3", "phij3", "j3_quantile", "pTb1", "etab1", "phib1", "b1_quantile", "b1m",
                     "pTb2", "etab2", "phib2", "b2_quantile", "b2m", "pTl1", "etal1", "phil1",
                     "ETMiss", "ETMissPhi", "metsig_New")


@fixture("atlas_opendata_tiny")
def atlas_opendata_tiny(out: Path) -> None:
    """The ATLAS electroweakino release's layout: `signal/Wh_hbb_fullMix.h5`, `singletop/singletop.h5`,
    `ttbar/ttbar.h5`, pandas HDF5 tables (PyTables) with the release's columns plus one unused
    column (`runNumber`) the reader must ignore; 80 / 40 / 40 events of random kinematics, a
    missing third jet stored as -99 in about half of them."""
    import pandas as pd

    rng = np.random.default_rng(0)
    for process, file, n in (("signal", "Wh_hbb_fullMix.h5", 80), ("singletop", "singletop.h5", 40),
                             ("ttbar", "ttbar.h5", 40)):
        table = {}
        for column in ATLAS_EWK_COLUMNS:
            if column.startswith("pT") or column in ("ETMiss", "b1m", "b2m"):
                table[column] = rng.gamma(2.0, 40.0, n) + 20.0
            elif column.startswith("eta"):
                table[column] = rng.normal(0.0, 1.2, n)
            elif column.startswith("phi") or column == "ETMissPhi":
                table[column] = rng.uniform(-np.pi, np.pi, n)
            elif column.endswith("quantile"):
                table[column] = rng.integers(1, 6, n).astype(float)
            else:
                table[column] = rng.normal(8.0, 3.0, n)
        frame = pd.DataFrame(table)
        frame.loc[rng.random(n) < 0.5, ["pTj3", "etaj3", "phij3", "j3_quantile"]] = -99.0
        frame["runNumber"] = 410470
        (out / process).mkdir()
        frame.to_hdf(out / process / file, key="events", mode="w")


# Builders for the sources of single chapters live in sibling modules; importing them registers them.
from thesis.core import fixtures_ceramics, fixtures_semcom, fixtures_sinks, fixtures_spare  # noqa: E402,F401
from thesis.core import fixtures_kv_decoding  # noqa: E402,F401

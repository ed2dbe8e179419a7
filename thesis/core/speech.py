"""CommonVoice for CTC speech recognition (thesis Sec. 3.1: XLS-R fine-tuned on CommonVoice-es, WER).

A CommonVoice release folder holds `<split>.tsv` files (columns include `path` and `sentence`) and
the audio in `clips/` (MP3 in real releases, WAV in the `commonvoice_tiny` fixture; soundfile reads
both). Clips are read with soundfile, mixed to mono and resampled with `scipy.signal.resample_poly`
when their rate differs from the model's, then normalised by the checkpoint's
`Wav2Vec2FeatureExtractor`. Sentences are normalised to the characters of the checkpoint's CTC
vocabulary (`normalise_text`) and encoded by its `Wav2Vec2CTCTokenizer`.

WER and CER are corpus-level rates (total edits / total reference words or characters, the usual
ASR convention and jiwer's), computed here by Levenshtein distance.
"""

from __future__ import annotations

import csv
import logging
import math
import unicodedata
from collections.abc import Iterable, Sequence
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import lightning as L
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from thesis.core.data import training_loader
from thesis.core.errors import DataNotFoundError

log = logging.getLogger(__name__)

IGNORE_INDEX = -100  # label padding: ignored by the CTC loss and by decoding
APOSTROPHES = str.maketrans({"’": "'", "‘": "'", "`": "'", "´": "'"})
PREPARE_HINT = ("download a CommonVoice release from commonvoice.mozilla.org, check its language folder with "
                "`python scripts/prepare_commonvoice.py --release cv-corpus-<version>/es` (add --processor-out "
                "<dir> to write a CTC processor for a pre-trained model) and point data.root at that folder, "
                "or set paths.data_dir")


# --- error rates -----------------------------------------------------------------------------------

def edit_distance(ref: Sequence[Any], hyp: Sequence[Any]) -> int:
    """Levenshtein distance: fewest substitutions, deletions and insertions turning `ref` into `hyp`."""
    previous = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, start=1):
        current = [i]
        for j, h in enumerate(hyp, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (r != h)))
        previous = current
    return previous[-1]


def _error_rate(refs: Sequence[Sequence[Any]], hyps: Sequence[Sequence[Any]]) -> float:
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    total = sum(len(r) for r in refs)
    if total == 0:
        raise ValueError("the references are empty: an error rate needs at least one reference unit")
    return sum(edit_distance(r, h) for r, h in zip(refs, hyps)) / total


def word_error_rate(refs: Sequence[str], hyps: Sequence[str]) -> float:
    """Corpus WER: word-level edits over all pairs / reference words (words split on whitespace)."""
    return _error_rate([r.split() for r in refs], [h.split() for h in hyps])


def char_error_rate(refs: Sequence[str], hyps: Sequence[str]) -> float:
    """Corpus CER: character-level edits / reference characters (spaces count, as in jiwer)."""
    return _error_rate(list(refs), list(hyps))


# --- text ------------------------------------------------------------------------------------------

def ctc_alphabet(tokenizer: Any) -> frozenset[str]:
    """The characters a character-level CTC tokenizer can spell: its one-character tokens other
    than the word delimiter, plus the space that the delimiter stands for."""
    special = set(tokenizer.all_special_tokens) | {tokenizer.word_delimiter_token}
    return frozenset(t for t in tokenizer.get_vocab() if len(t) == 1 and t not in special) | {" "}


def _strip_accents(char: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKD", char) if not unicodedata.combining(c))


def normalise_text(text: str, alphabet: Iterable[str]) -> str:
    """Lower-case `text` and spell it with `alphabet` only, so every character has a CTC label.

    Characters in the alphabet stay; other letters lose their accents if that puts them in the
    alphabet ("ç" -> "c" for a Spanish vocabulary) and are dropped otherwise; everything else
    (punctuation, digits, symbols) separates words. Typographic apostrophes become "'".
    """
    alphabet = set(alphabet)
    chars = []
    for char in unicodedata.normalize("NFC", text.lower().translate(APOSTROPHES)):
        if char in alphabet:
            chars.append(char)
        elif char.isalpha():
            base = _strip_accents(char)
            chars.append(base if base and set(base) <= alphabet else "")
        else:
            chars.append(" ")
    return " ".join("".join(chars).split())


# --- audio -----------------------------------------------------------------------------------------

def resample(audio: np.ndarray, rate: int, target_rate: int) -> np.ndarray:
    """Polyphase resampling (scipy's Kaiser-windowed FIR) from `rate` to `target_rate`."""
    if rate == target_rate:
        return audio
    from scipy.signal import resample_poly

    g = math.gcd(rate, target_rate)
    return resample_poly(audio, target_rate // g, rate // g).astype(np.float32)


def load_audio(path: Path, sample_rate: int) -> np.ndarray:
    """A clip as mono float32 at `sample_rate` (channels averaged)."""
    import soundfile as sf

    audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    return resample(audio.mean(axis=1), rate, sample_rate)


# --- dataset ---------------------------------------------------------------------------------------

class SpeechBatch(NamedTuple):
    """A padded batch. `input_values` comes first so that `batch[0]` is the model input, as the
    ACM stage-1/2 modules expect."""

    input_values: Tensor  # (B, samples) normalised waveforms, zero-padded
    attention_mask: Tensor  # (B, samples) 1 on real samples
    labels: Tensor  # (B, characters) CTC label ids, IGNORE_INDEX-padded


class CommonVoiceDataset(Dataset):
    """(clip file, normalised sentence) pairs, read, resampled and encoded on access."""

    def __init__(self, clips: Sequence[Path], sentences: Sequence[str], processor: Any, sample_rate: int):
        self.clips, self.sentences = list(clips), list(sentences)
        self.processor = processor
        self.sample_rate = sample_rate

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        audio = load_audio(self.clips[index], self.sample_rate)
        values = self.processor.feature_extractor(audio, sampling_rate=self.sample_rate).input_values[0]
        labels = self.processor.tokenizer(self.sentences[index]).input_ids
        return torch.as_tensor(np.asarray(values), dtype=torch.float32), torch.tensor(labels, dtype=torch.long)


def collate_speech(items: Sequence[tuple[Tensor, Tensor]], padding_value: float = 0.0) -> SpeechBatch:
    """Right-pad waveforms (with the feature extractor's padding value) and labels (IGNORE_INDEX)."""
    waves, labels = zip(*items)
    input_values = torch.nn.utils.rnn.pad_sequence(waves, batch_first=True, padding_value=padding_value)
    lengths = torch.tensor([len(w) for w in waves])
    attention_mask = (torch.arange(input_values.shape[1]) < lengths[:, None]).long()
    padded_labels = torch.nn.utils.rnn.pad_sequence(labels, batch_first=True, padding_value=IGNORE_INDEX)
    return SpeechBatch(input_values, attention_mask, padded_labels)


def load_wav2vec2_processor(path_or_name: str | Path) -> Any:
    """`Wav2Vec2Processor.from_pretrained` (a local dir or a hub id) with the project's errors."""
    from transformers import Wav2Vec2Processor

    from thesis.core.models import _from_pretrained

    return _from_pretrained(Wav2Vec2Processor, path_or_name, "processor")


def read_split(tsv: Path) -> list[dict[str, str]]:
    """The rows of a CommonVoice split file (sentences hold quotes, so quoting is off)."""
    with open(tsv, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))


class CommonVoiceDataModule(L.LightningDataModule):
    """Train/val/test splits of a CommonVoice release folder as padded `SpeechBatch`es.

    `max_seconds` drops longer training clips (memory; evaluation keeps every clip so WER is on
    the whole split); `limit` keeps the first n rows of each split (smoke runs). Rows whose
    sentence normalises to nothing are dropped.
    """

    def __init__(
        self,
        root: str,
        processor_path: str,
        split_files: dict[str, str] | None = None,
        sample_rate: int = 16000,
        batch_size: int = 8,
        eval_batch_size: int | None = None,
        max_seconds: float | None = None,
        limit: int | None = None,
        num_workers: int = 0,
        prepare_hint: str = PREPARE_HINT,
    ):
        super().__init__()
        self.root = Path(root)
        self.processor_path = processor_path
        self.split_files = dict(split_files or {"train": "train.tsv", "val": "dev.tsv", "test": "test.tsv"})
        self.sample_rate = sample_rate
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.max_seconds = max_seconds
        self.limit = limit
        self.num_workers = num_workers
        self.prepare_hint = prepare_hint
        self.processor: Any = None
        self.splits: dict[str, CommonVoiceDataset] = {}

    def _require(self, path: Path, what: str) -> Path:
        if not path.exists():
            raise DataNotFoundError(f"CommonVoice {what} {path} not found: {self.prepare_hint}")
        return path

    def _too_long(self, clip: Path) -> bool:
        import soundfile as sf

        return self.max_seconds is not None and sf.info(str(clip)).duration > self.max_seconds

    def _dataset(self, split: str, alphabet: frozenset[str]) -> CommonVoiceDataset:
        rows = read_split(self._require(self.root / self.split_files[split], "split file"))[: self.limit]
        clips, sentences = [], []
        for row in rows:
            clip, sentence = self.root / "clips" / row["path"], normalise_text(row["sentence"], alphabet)
            if sentence and not (split == "train" and self._too_long(clip)):
                clips.append(clip)
                sentences.append(sentence)
        if len(clips) < len(rows):
            log.info("%s: kept %d of %d clips (empty sentence or longer than %s s)", split, len(clips), len(rows),
                     self.max_seconds)
        return CommonVoiceDataset(clips, sentences, self.processor, self.sample_rate)

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        self._require(self.root, "folder")
        self._require(self.root / "clips", "clips folder")
        if len(Path(self.processor_path).parts) > 2:  # a folder, not a hub id "owner/name"
            self._require(Path(self.processor_path), "processor folder")
        self.processor = load_wav2vec2_processor(self.processor_path)
        alphabet = ctc_alphabet(self.processor.tokenizer)
        self.splits = {split: self._dataset(split, alphabet) for split in self.split_files}

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        self.setup()
        collate = partial(collate_speech, padding_value=self.processor.feature_extractor.padding_value)
        if shuffle:
            return training_loader(self.splits[split], self.batch_size, self.num_workers, collate_fn=collate)
        return DataLoader(self.splits[split], batch_size=self.eval_batch_size, num_workers=self.num_workers,
                          collate_fn=collate)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", False)

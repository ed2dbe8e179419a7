"""CommonVoice reading, text normalisation, resampling and the WER/CER metrics."""

import numpy as np
import pytest
import torch

from thesis.core import fixtures
from thesis.core.errors import DataNotFoundError
from thesis.core.speech import (
    IGNORE_INDEX,
    CommonVoiceDataModule,
    char_error_rate,
    collate_speech,
    edit_distance,
    load_audio,
    normalise_text,
    resample,
    word_error_rate,
)

SPANISH = set("abcdefghijklmnopqrstuvwxyzáéíóúñü' ")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("fixtures")
    return fixtures.materialize("commonvoice_tiny", root), fixtures.materialize("hf_wav2vec2_tiny", root)


@pytest.mark.parametrize("ref, hyp, distance", [
    ("kitten", "sitting", 3), ("", "abc", 3), ("abc", "", 3), ("flaw", "lawn", 2), ("same", "same", 0),
])
def test_edit_distance_hand_computed(ref, hyp, distance):
    assert edit_distance(ref, hyp) == distance


def test_word_error_rate_known_values():
    assert word_error_rate(["a b c"], ["a x c"]) == pytest.approx(1 / 3)
    assert word_error_rate(["a b"], ["a b c d"]) == pytest.approx(1.0)  # two insertions over two words
    assert word_error_rate(["a b c", "d"], ["a x c", ""]) == pytest.approx(2 / 4)  # corpus level, not a mean
    assert word_error_rate(["hola  mundo"], [" hola mundo "]) == 0.0


def test_char_error_rate_known_values():
    assert char_error_rate(["abc"], ["abd"]) == pytest.approx(1 / 3)
    assert char_error_rate(["kitten", "ab"], ["sitting", "ab"]) == pytest.approx(3 / 8)
    assert char_error_rate(["a b"], ["ab"]) == pytest.approx(1 / 3)  # the space is a character


def test_error_rates_reject_empty_or_unpaired_input():
    with pytest.raises(ValueError, match="empty"):
        word_error_rate([""], ["a"])
    with pytest.raises(ValueError, match="hypotheses"):
        char_error_rate(["a", "b"], ["a"])


@pytest.mark.parametrize("text, expected", [
    ("¿Qué TAL, Señor?", "qué tal señor"),
    ("L’été—là  est 2 fois", "l'été la est fois"),  # à is not Spanish: a
    ("Ça y est", "ca y est"),
    ("straße", "strae"),
    ("...", ""),
])
def test_normalise_text_spells_with_the_vocabulary(text, expected):
    assert normalise_text(text, SPANISH) == expected


def test_resample_keeps_duration_and_pitch():
    rate, target = 22050, 16000
    t = np.arange(rate) / rate
    out = resample(np.sin(2 * np.pi * 440 * t).astype(np.float32), rate, target)
    assert out.dtype == np.float32 and len(out) == target
    spectrum = np.abs(np.fft.rfft(out))
    assert np.argmax(spectrum) == 440  # 1 s of audio: bin index = frequency in Hz


def test_load_audio_mixes_to_mono_and_resamples(tmp_path):
    import soundfile as sf

    stereo = np.stack([np.full(8000, 0.5), np.full(8000, -0.1)], axis=1)
    sf.write(tmp_path / "clip.wav", stereo, 8000)
    audio = load_audio(tmp_path / "clip.wav", 16000)
    assert audio.shape == (16000,) and audio.dtype == np.float32
    assert np.allclose(audio[2000:-2000], 0.2, atol=1e-3)


def test_collate_pads_audio_and_labels():
    items = [(torch.ones(5), torch.tensor([3, 4])), (torch.ones(3), torch.tensor([5, 6, 7]))]
    batch = collate_speech(items)
    assert batch.input_values.shape == (2, 5) and batch.input_values[1, 3:].eq(0).all()
    assert batch.attention_mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]
    assert batch.labels.tolist() == [[3, 4, IGNORE_INDEX], [5, 6, 7]]


def test_datamodule_batches_decode_to_the_normalised_sentences(folders):
    corpus, checkpoint = folders
    data = CommonVoiceDataModule(str(corpus), str(checkpoint), batch_size=4)
    data.setup()
    assert {split: len(ds) for split, ds in data.splits.items()} == {"train": 4, "val": 2, "test": 2}
    batch = next(iter(data.val_dataloader()))
    assert batch[0] is batch.input_values  # stage 1/2 read batch[0]
    lengths = batch.attention_mask.sum(-1)
    assert batch.input_values.shape == (2, int(lengths.max()))
    for row, length in zip(batch.input_values, lengths):  # feature extractor: zero mean, unit variance
        assert abs(float(row[:length].mean())) < 1e-3 and float(row[:length].std()) == pytest.approx(1, abs=1e-2)
    tokenizer = data.processor.tokenizer
    decoded = [tokenizer.decode(row[row != IGNORE_INDEX].tolist(), group_tokens=False) for row in batch.labels]
    assert decoded == data.splits["val"].sentences
    assert all(s and s == s.lower() for s in decoded)


def test_max_seconds_drops_long_training_clips_only(folders):
    corpus, checkpoint = folders
    data = CommonVoiceDataModule(str(corpus), str(checkpoint), max_seconds=1.0)
    data.setup()
    assert len(data.splits["train"]) == 3  # the fixture's train clips last 0.5, 0.75, 1.0 and 1.25 s
    assert len(data.splits["test"]) == 2


def test_missing_folder_names_it_and_the_fix(tmp_path, folders):
    missing = tmp_path / "cv-corpus" / "es"
    with pytest.raises(DataNotFoundError, match=r"CommonVoice folder .*cv-corpus/es not found: download"):
        CommonVoiceDataModule(str(missing), str(folders[1])).setup()


def test_missing_split_file_is_named(folders):
    corpus, checkpoint = folders
    data = CommonVoiceDataModule(str(corpus), str(checkpoint), split_files={"train": "validated.tsv"})
    with pytest.raises(DataNotFoundError, match="split file .*validated.tsv"):
        data.setup()

"""Language-modelling scoring without the full logits, lazy text reading and the BOS option: scoring
in slices equals a one-shot log-softmax, the text tokens read from the start of a file are those of a
whole-file tokenization, and `bos=True` puts BOS before length - 1 of those tokens."""

import math

import pytest
import torch
from transformers import AutoTokenizer

from thesis.core import fixtures
from thesis.core.errors import ConfigError, DataNotFoundError
from thesis.kvcache.tasks.cache_stats import CacheStats
from thesis.kvcache.tasks.perplexity import (LanguageModelingTask, Scored, compressed_nll, leading_tokens,
                                             token_scores, totals)
from thesis.kvcache.tasks.streaming_perplexity import StreamingLanguageModelingTask

CONTEXT = 5
WORDS = "the a model token cache key value query attention layer sink expert router budget Zürich 1234 (x)".split()


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return AutoTokenizer.from_pretrained(fixtures.materialize("hf_llama_tiny", tmp_path_factory.mktemp("fixtures")))


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    """Paragraphs of random words with single, double and tripled spaces and blank lines between them."""
    generator = torch.Generator().manual_seed(0)
    lines = []
    for _ in range(400):
        n_words = int(torch.randint(1, 15, (1,), generator=generator))
        picks = torch.randint(0, len(WORDS), (n_words,), generator=generator)
        gaps = torch.randint(1, 4, (len(picks),), generator=generator)
        lines.append("".join(WORDS[w] + " " * int(g) for w, g in zip(picks, gaps)).rstrip())
        if torch.rand(1, generator=generator) < 0.3:
            lines.append("")
    path = tmp_path_factory.mktemp("text") / "corpus.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def one_shot(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    log_probs = torch.log_softmax(logits.double(), dim=-1)
    return -log_probs.gather(-1, targets[..., None])[..., 0], log_probs.argmax(dim=-1) == targets


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("slice_length", [1, 3, 7, 100])
def test_scoring_in_slices_equals_a_one_shot_log_softmax(dtype, slice_length):
    generator = torch.Generator().manual_seed(0)
    logits = (4 * torch.randn(3, 17, 50, generator=generator)).to(dtype)
    targets = torch.randint(0, 50, (3, 17), generator=generator)
    nll, correct = token_scores(logits, targets, slice_length)
    expected_nll, expected_correct = one_shot(logits.float(), targets)
    assert nll.dtype == torch.float32 and nll.shape == correct.shape == targets.shape
    assert torch.allclose(nll.double(), expected_nll, atol=1e-5)
    assert torch.equal(correct, expected_correct)


def test_compressed_nll_in_slices_equals_a_plain_forward(tiny_llama, prompt):
    ids = torch.cat([prompt[:, :64], prompt[:, 64:]])
    with torch.no_grad():
        logits = tiny_llama(input_ids=ids).logits[:, CONTEXT - 1:-1]
    expected_nll, _ = one_shot(logits, ids[:, CONTEXT:])
    whole = compressed_nll(tiny_llama, ids, CONTEXT, None)
    for slice_length in (1, 5, 16):
        sliced = compressed_nll(tiny_llama, ids, CONTEXT, None, slice_length=slice_length)
        assert torch.allclose(sliced.token_nll, whole.token_nll, rtol=1e-6, atol=0)  # float32 rounding only
        assert torch.equal(sliced.token_correct, whole.token_correct)
        assert sliced.n_tokens == ids[:, CONTEXT:].numel()
    assert torch.allclose(whole.token_nll.double(), expected_nll, atol=1e-4)
    one_token = compressed_nll(tiny_llama, ids[:, :CONTEXT + 1], CONTEXT, None)
    assert torch.allclose(one_token.token_nll.double(), expected_nll[:, :1], atol=1e-4)


def test_totals_on_hand_made_numbers():
    first = Scored(6.0, 3, CacheStats(0.0, 0, 0), torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[True, False, True]]))
    second = Scored(0.0, 1, CacheStats(0.0, 0, 0), torch.tensor([[0.0]]), torch.tensor([[False]]))
    result = totals([first, second])
    assert result == {"nll": pytest.approx(1.5), "perplexity": pytest.approx(math.exp(1.5)), "accuracy": 0.5}


@pytest.mark.parametrize("chars_per_token", [0.01, 0.1, 4.0, 1000.0])
@pytest.mark.parametrize("count", [1, 50, 300])
def test_leading_tokens_are_those_of_the_whole_file(tokenizer, text_file, chars_per_token, count):
    whole = tokenizer(text_file.read_text(encoding="utf-8"), add_special_tokens=False)["input_ids"]
    assert len(whole) > 300 + 16
    assert leading_tokens(tokenizer, text_file, count, chars_per_token, margin=16) == whole[:count]


def test_leading_tokens_of_a_short_file_are_all_of_them(tokenizer, tmp_path):
    path = tmp_path / "short.txt"
    path.write_text("the model\nkey value", encoding="utf-8")
    whole = tokenizer(path.read_text(encoding="utf-8"), add_special_tokens=False)["input_ids"]
    assert leading_tokens(tokenizer, path, 10_000, chars_per_token=0.01) == whole


@pytest.mark.parametrize("task_class", [LanguageModelingTask, StreamingLanguageModelingTask])
def test_sequences_are_consecutive_chunks_of_the_whole_file(task_class, tokenizer, text_file):
    whole = torch.tensor(tokenizer(text_file.read_text(encoding="utf-8"), add_special_tokens=False)["input_ids"])
    task = task_class(context_length=4, continuation_length=36, n_sequences=6, text_path=text_file)
    sequences = task.sequences(tokenizer)
    assert [s.shape for s in sequences] == [torch.Size([1, 40])] * 6
    assert torch.equal(torch.cat(sequences, dim=1)[0], whole[:240])


@pytest.mark.parametrize("task_class", [LanguageModelingTask, StreamingLanguageModelingTask])
def test_bos_sequences_are_bos_then_length_minus_one_text_tokens(task_class, tokenizer, text_file):
    whole = torch.tensor(tokenizer(text_file.read_text(encoding="utf-8"), add_special_tokens=False)["input_ids"])
    task = task_class(context_length=1, continuation_length=29, n_sequences=5, text_path=text_file, bos=True)
    sequences = task.sequences(tokenizer)
    assert [s.shape for s in sequences] == [torch.Size([1, 30])] * 5
    assert all(int(s[0, 0]) == tokenizer.bos_token_id for s in sequences)
    assert torch.equal(torch.cat([s[:, 1:] for s in sequences], dim=1)[0], whole[:5 * 29])
    assert tokenizer.bos_token_id not in whole[:5 * 29].tolist()


def test_bos_with_random_ids_and_without_a_bos_token(tokenizer):
    plain = LanguageModelingTask(3, 5, 2, seed=1).sequences(tokenizer)
    with_bos = LanguageModelingTask(3, 5, 2, seed=1, bos=True).sequences(tokenizer)
    assert [s.shape for s in with_bos] == [s.shape for s in plain] == [torch.Size([1, 8])] * 2
    assert all(int(s[0, 0]) == tokenizer.bos_token_id for s in with_bos)

    class NoBos:
        bos_token_id = None

        def __len__(self):
            return 10

    with pytest.raises(ConfigError, match="bos"):
        LanguageModelingTask(3, 5, 2, bos=True).sequences(NoBos())


def test_missing_and_short_files_are_reported(tokenizer, tmp_path):
    with pytest.raises(DataNotFoundError, match="nowhere.txt not found.*Pile"):
        LanguageModelingTask(4, 4, 1, text_path=tmp_path / "nowhere.txt", source="Pile").sequences(tokenizer)
    short = tmp_path / "short.txt"
    short.write_text("the model", encoding="utf-8")
    count = len(tokenizer("the model", add_special_tokens=False)["input_ids"])
    with pytest.raises(DataNotFoundError, match=f"holds {count} tokens, fewer than the 80"):
        LanguageModelingTask(4, 4, 10, text_path=short).sequences(tokenizer)

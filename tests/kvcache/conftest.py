"""Tiny random-init Llama models (spec F.a) saved with `save_pretrained` and loaded back, as the paper
scale loads real checkpoints; a prompt of 128 random tokens; the miniature's stdlib-text corpus and its
equal-length words."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from thesis.kvcache.mini.corpus import pydoc_corpus
from thesis.kvcache.mini.documents import equal_length_words

PROMPT_LENGTH = 128


def tiny_config(layers: int = 2) -> LlamaConfig:
    return LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                       num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=1024)


def saved_and_loaded(directory, layers: int, attn_implementation: str) -> LlamaForCausalLM:
    torch.manual_seed(0)
    LlamaForCausalLM(tiny_config(layers)).save_pretrained(directory)
    return LlamaForCausalLM.from_pretrained(directory, attn_implementation=attn_implementation).eval()


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> LlamaForCausalLM:
    return saved_and_loaded(tmp_path_factory.mktemp("tiny_llama"), 2, "sdpa")


@pytest.fixture(scope="session")
def tiny_llama_eager(tmp_path_factory) -> LlamaForCausalLM:
    return saved_and_loaded(tmp_path_factory.mktemp("tiny_llama_eager"), 2, "eager")


@pytest.fixture(scope="session")
def tiny_llama_4_layers(tmp_path_factory) -> LlamaForCausalLM:
    return saved_and_loaded(tmp_path_factory.mktemp("tiny_llama_4"), 4, "sdpa")


@pytest.fixture(scope="session")
def prompt() -> torch.Tensor:
    return torch.randint(0, 256, (1, PROMPT_LENGTH), generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="session")
def corpus():
    return pydoc_corpus(0.1)


@pytest.fixture(scope="session")
def words(corpus):
    return equal_length_words(corpus.words(), 6)

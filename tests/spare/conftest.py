"""Shared tiny models for the spare tests: a 3-layer random Llama on the synthetic world's vocabulary."""

import pytest
import torch


@pytest.fixture(scope="module")
def world():
    from thesis.spare.synth import World

    return World(n_entities=12, n_relations=2, n_values=10, seed=0)


@pytest.fixture(scope="module")
def tiny_lm(world):
    from omegaconf import OmegaConf

    from thesis.spare.synth import word_tokenizer
    from thesis.spare.synth_lm import build_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build_model(world, OmegaConf.create({"hidden": 32, "layers": 3, "heads": 2})).eval()
    return model, word_tokenizer(world)

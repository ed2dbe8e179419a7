"""SAE of Eq. 5.1: training recovers a planted dictionary; the published formats load to the same maps."""

import json

import numpy as np
import pytest
import torch

from thesis.core.errors import CheckpointError, ConfigError
from thesis.spare.sae import SparseAutoencoder
from thesis.spare.sae_io import load_eleuther, load_gemmascope, load_sae, load_saelens, save_eleuther
from thesis.spare.sae_train import train_sae

from .planted import planted


def test_topk_sae_reconstructs_a_planted_dictionary_sparsely():
    data, atoms = planted()
    sae, losses = train_sae(data, n=64, k=3, steps=600, batch_size=512, lr=3e-3, seed=0)
    assert np.isfinite(losses).all() and np.mean(losses[-20:]) < 0.5 * np.mean(losses[:20])
    assert sae.fvu(data) < 0.1
    z = sae.encode(data)
    assert ((z > 0).sum(1) <= 3).all()
    # most planted atoms are found among the decoder rows
    cos = (atoms @ sae.W_dec.detach().T).max(1).values
    assert (cos > 0.9).float().mean() > 0.7
    assert torch.allclose(sae.W_dec.norm(dim=1), torch.ones(64), atol=1e-4)


@pytest.mark.slow
def test_relu_sae_with_l1_is_sparser_than_without():
    data, _ = planted(n_samples=1024)
    dense, _ = train_sae(data, n=32, k=None, activation="relu", steps=200, lr=3e-3, seed=0)
    sparse, _ = train_sae(data, n=32, k=None, activation="relu", steps=200, lr=3e-3, l1=0.05, seed=0)
    assert (sparse.encode(data) > 0).float().mean() < (dense.encode(data) > 0).float().mean()


def test_codes_topk_jumprelu_and_pre_topk_relu():
    sae = SparseAutoencoder(4, 4, activation="topk", k=2)
    with torch.no_grad():
        sae.W_enc.copy_(torch.eye(4))
    h = torch.tensor([[3.0, -1.0, 2.0, 1.0]])
    assert torch.equal(sae.code(h, "pre_topk_relu"), torch.tensor([[3.0, 0.0, 2.0, 1.0]]))
    assert torch.equal(sae.encode(h), torch.tensor([[3.0, 0.0, 2.0, 0.0]]))
    jump = SparseAutoencoder(4, 4, activation="jumprelu", subtract_decoder_bias=False)
    with torch.no_grad():
        jump.W_enc.copy_(torch.eye(4))
        jump.threshold.fill_(1.5)
        jump.b_dec.fill_(10.0)  # not subtracted from the input in GemmaScope
    assert torch.equal(jump.code(h, "jumprelu"), torch.tensor([[3.0, 0.0, 2.0, 0.0]]))
    with pytest.raises(ValueError):
        sae.code(h, "jumprelu")


@pytest.fixture(scope="module")
def sae_fixtures(tmp_path_factory):
    from thesis.core.fixtures import materialize

    root = tmp_path_factory.mktemp("sae")
    return {name: materialize(name, root) for name in
            ("spare_sae_tiny_eleuther", "spare_sae_tiny_gemmascope", "spare_sae_tiny_saelens")}


def test_published_formats_load_to_the_planted_tensors(sae_fixtures):
    from thesis.core.fixtures_spare import random_sae_tensors

    raw = random_sae_tensors(1)
    h = torch.randn(5, 64)
    gemma = load_gemmascope(sae_fixtures["spare_sae_tiny_gemmascope"] / "layer_1/width_131k/canonical")
    pre = h.numpy() @ raw["W_enc"] + raw["b_enc"]
    expected = pre * (pre > raw["threshold"])
    assert np.allclose(gemma.encode(h).detach().numpy(), expected, atol=1e-5)
    lens = load_saelens(sae_fixtures["spare_sae_tiny_saelens"] / "layer_1")
    assert torch.allclose(lens.encode(h), gemma.encode(h)) and lens.activation == "jumprelu"
    eleuther = load_eleuther(sae_fixtures["spare_sae_tiny_eleuther"] / "layers.1")
    relu = np.maximum((h.numpy() - raw["b_dec"]) @ raw["W_enc"] + raw["b_enc"], 0)
    assert np.allclose(eleuther.code(h, "pre_topk_relu").detach().numpy(), relu, atol=1e-5)
    assert ((eleuther.encode(h) > 0).sum(1) <= 8).all()
    assert np.allclose(eleuther.decode(torch.eye(256)[:1]).detach().numpy(), raw["W_dec"][0] + raw["b_dec"], atol=1e-6)


def test_eleuther_round_trip_and_errors(tmp_path):
    data, _ = planted(n_samples=256)
    sae, _ = train_sae(data, n=32, k=4, steps=5, seed=0)
    loaded = load_eleuther(save_eleuther(sae, tmp_path / "layers.0"))
    assert torch.allclose(loaded(data), sae(data), atol=1e-6)
    assert json.loads((tmp_path / "layers.0" / "cfg.json").read_text())["k"] == 4
    with pytest.raises(CheckpointError, match="not found"):
        load_sae("eleuther", tmp_path / "missing")
    with pytest.raises(ConfigError):
        load_sae("npz", tmp_path)
    (tmp_path / "layers.0" / "cfg.json").write_text("{oops")
    with pytest.raises(CheckpointError, match="JSON"):
        load_eleuther(tmp_path / "layers.0")

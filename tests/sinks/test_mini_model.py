"""The three training objectives against independent computations: the LLaDA loss counts only masked
response tokens with weight 1/t, Dream's shift reads position i from logits i - 1, the ARM is causal
(and the diffusion modes are not); checkpoints round-trip through save_pretrained/from_pretrained."""

import math

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from thesis.core.errors import CheckpointError, ConfigError
from thesis.sinks.mini.corpus import MASK, SynthReasoning
from thesis.sinks.mini.model import (diffusion_loss, logits_fn, mask_response, next_token_loss, shift_logits,
                                     training_loss)
from thesis.sinks.mini.model import build_model as build
from thesis.sinks.mini.train import load_checkpoint, train_mode, training_pool

SHAPE = OmegaConf.create({"hidden": 16, "layers": 2, "heads": 2, "ffn_mult": 2})
P = 24
CORPUS = SynthReasoning(prompt_length=P, gen_length=12)


def reference_diffusion_loss(logits, x0, masked, t, target_offset):
    """Loop form: for each sequence, sum over masked response positions i of -log p(x0_i) / t, with
    p read at position i - target_offset, divided by the response length; mean over sequences."""
    total = 0.0
    for b in range(x0.shape[0]):
        s = 0.0
        for i in range(P, x0.shape[1]):
            if masked[b, i]:
                row = logits[b, i - target_offset].double()
                s += -(row[x0[b, i]] - torch.logsumexp(row, 0)).item() / t[b].item()
        total += s / (x0.shape[1] - P)
    return total / x0.shape[0]


def sample(batch=4, seed=0):
    x0 = CORPUS.batch(batch, np.random.default_rng(seed))[0]
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, x0.shape[1], 30, generator=generator)
    t = torch.tensor([0.9, 0.3, 0.05, 0.6])[:batch]
    return x0, logits, t, generator


def test_forward_process_masks_response_tokens_only_at_rate_t():
    x0 = CORPUS.batch(400, np.random.default_rng(0))[0]
    t = torch.full((400,), 0.3)
    noisy, masked = mask_response(x0, P, t, torch.Generator().manual_seed(0))
    assert not masked[:, :P].any() and torch.equal(noisy[:, :P], x0[:, :P])
    assert (noisy[masked] == MASK).all() and torch.equal(noisy[~masked], x0[~masked])
    assert abs(masked[:, P:].float().mean().item() - 0.3) < 0.02


def test_llada_loss_is_the_reweighted_masked_ce():
    x0, logits, t, generator = sample()
    _, masked = mask_response(x0, P, t, generator)
    value = diffusion_loss(logits, x0, masked, t, P, shift=False).item()
    assert math.isclose(value, reference_diffusion_loss(logits, x0, masked, t, 0), rel_tol=1e-5)


def test_llada_loss_ignores_unmasked_and_prompt_positions():
    x0, logits, t, generator = sample()
    _, masked = mask_response(x0, P, t, generator)
    changed = logits.clone()
    changed[~masked] += 5 * torch.randn_like(changed[~masked])
    base = diffusion_loss(logits, x0, masked, t, P, shift=False)
    assert torch.isclose(diffusion_loss(changed, x0, masked, t, P, shift=False), base)
    changed[masked] += 1.0 * torch.randn_like(changed[masked])
    assert not torch.isclose(diffusion_loss(changed, x0, masked, t, P, shift=False), base)


def test_loss_scales_as_one_over_t():
    x0, logits, _, generator = sample(batch=1)
    masked = torch.zeros_like(x0, dtype=torch.bool)
    masked[0, P + 2] = True
    at_half = diffusion_loss(logits, x0, masked, torch.tensor([0.5]), P, shift=False)
    at_quarter = diffusion_loss(logits, x0, masked, torch.tensor([0.25]), P, shift=False)
    assert torch.isclose(at_quarter, 2 * at_half)


def test_dream_shift_reads_position_i_from_logits_i_minus_1():
    x0, logits, t, generator = sample()
    _, masked = mask_response(x0, P, t, generator)
    value = diffusion_loss(logits, x0, masked, t, P, shift=True).item()
    assert math.isclose(value, reference_diffusion_loss(logits, x0, masked, t, 1), rel_tol=1e-5)
    shifted = shift_logits(logits)
    assert torch.equal(shifted[:, 5], logits[:, 4]) and torch.equal(shifted[:, 0], logits[:, 0])


def test_arm_loss_is_next_token_ce_on_the_response():
    x0, logits, _, _ = sample()
    expected = torch.nn.functional.cross_entropy(
        torch.stack([logits[b, i - 1] for b in range(4) for i in range(P, x0.shape[1])]),
        torch.stack([x0[b, i] for b in range(4) for i in range(P, x0.shape[1])]))
    assert torch.isclose(next_token_loss(logits, x0, P), expected)


@pytest.mark.parametrize("mode, causal", [("arm", True), ("llada", False), ("dream", False)])
def test_arm_is_causal_and_the_diffusion_modes_see_the_future(mode, causal):
    model = build(SHAPE, 36, seed=0).eval()
    ids = CORPUS.batch(2, np.random.default_rng(3))[0]
    later = ids.clone()
    later[:, 30:] = MASK
    with torch.no_grad():
        a, b = logits_fn(model, mode)(ids), logits_fn(model, mode)(later)
    assert torch.allclose(a[:, :30], b[:, :30], atol=1e-5) == causal
    with pytest.raises(ConfigError, match="training mode"):
        logits_fn(model, "bert")


def test_training_loss_runs_backward_in_every_mode():
    model = build(SHAPE, 36, seed=0)
    ids = CORPUS.batch(4, np.random.default_rng(4))[0]
    for mode in ("arm", "llada", "dream"):
        model.zero_grad()
        loss = training_loss(model, mode, ids, P, 1e-3, torch.Generator().manual_seed(0))
        loss.backward()
        assert torch.isfinite(loss) and model.model.embed_tokens.weight.grad.abs().sum() > 0


def test_train_save_and_reload_and_dream_starts_from_arm(tmp_path):
    cfg = OmegaConf.create({"shape": dict(SHAPE), "train": {
        "steps": {"arm": 3, "llada": 3, "dream": 2}, "init": {"arm": None, "llada": None, "dream": "arm"},
        "batch_size": 4, "lr": 1e-3, "weight_decay": 0.0, "warmup": 0.1, "grad_clip": 1.0, "t_min": 1e-3}})
    pool = training_pool(CORPUS, 16, 0)
    with pytest.raises(CheckpointError, match="arm"):
        train_mode("dream", pool, P, cfg, 0, tmp_path, torch.device("cpu"))
    info = train_mode("arm", pool, P, cfg, 0, tmp_path, torch.device("cpu"))
    assert info["steps"] == 3 and info["init"] == "random"
    assert train_mode("arm", pool, P, cfg, 0, tmp_path, torch.device("cpu")) == info  # reloaded, not retrained
    arm = load_checkpoint(tmp_path / "arm", torch.device("cpu"))
    dream_info = train_mode("dream", pool, P, cfg, 0, tmp_path, torch.device("cpu"))
    dream = load_checkpoint(tmp_path / "dream", torch.device("cpu"))
    assert dream_info["init"] == "arm"
    assert arm.config.num_hidden_layers == dream.config.num_hidden_layers == 2
    assert not torch.equal(arm.lm_head.weight, dream.lm_head.weight)

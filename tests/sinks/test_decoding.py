"""Masked-diffusion decoding: the transfer schedule, low-confidence remasking on hand-made logits,
zero masked sinks equal to plain decoding, and the autoregressive reference."""

import pytest
import torch

from thesis.core.errors import ConfigError
from thesis.sinks.capture import SinkCapture
from thesis.sinks.decoding import (autoregressive_generate, check_schedule, diffusion_generate, transfer_counts,
                                   unmask_most_confident)

from .toy import ToyLM

MASK = 0


def test_transfer_counts_spread_the_remainder_first():
    assert transfer_counts(torch.tensor([8, 5]), 4).tolist() == [[2, 2, 2, 2], [2, 1, 1, 1]]
    assert check_schedule(16, 8, 16) == 8
    with pytest.raises(ConfigError, match="block_length"):
        check_schedule(10, 4, 10)
    with pytest.raises(ConfigError, match="steps"):
        check_schedule(16, 8, 3)


def test_remasking_keeps_the_most_confident_masked_tokens_of_the_block():
    ids = torch.tensor([[5, MASK, MASK, MASK, MASK, MASK]])
    logits = torch.zeros(1, 6, 8)
    confidence = {0: 9.0, 1: 1.0, 2: 4.0, 3: 3.0, 4: 2.0, 5: 8.0}  # position 5 lies outside the block
    for position, value in confidence.items():
        logits[0, position, position + 1] = value
    out = unmask_most_confident(ids, logits, MASK, start=1, end=5, counts=torch.tensor([2]))
    assert out.tolist() == [[5, MASK, 3, 4, MASK, MASK]]  # positions 2 and 3, predicting token position + 1


def test_diffusion_unmasks_every_position_one_per_step():
    model = ToyLM()
    seen = []
    out = diffusion_generate(model, torch.tensor([[3, 4, 5]]), MASK, gen_length=8, block_length=4, steps=8,
                             on_step=lambda step, ids: seen.append((ids == MASK).sum().item()))
    assert seen == list(range(8, 0, -1))
    assert (out[:, 3:] != MASK).all()


@pytest.mark.parametrize("shift", [False, True])
def test_zero_masked_sinks_decode_token_for_token_like_no_capture(shift):
    model, prompt = ToyLM(), torch.tensor([[3, 4, 5, 6], [7, 8, 9, 10]])
    plain = diffusion_generate(model, prompt, MASK, 8, 4, 8, shift=shift)
    capture = SinkCapture(keep=4, topk=0)
    with capture:
        captured = diffusion_generate(model, prompt, MASK, 8, 4, 8, shift=shift,
                                      on_step=lambda step, ids: capture.begin_step(step))
    assert torch.equal(plain, captured)
    with SinkCapture(keep=4, topk=2):
        masked = diffusion_generate(model, prompt, MASK, 8, 4, 8, shift=shift)
    assert (masked[:, 4:] != MASK).all()


def test_autoregressive_reference_appends_greedy_tokens():
    model = ToyLM()
    out = autoregressive_generate(model, torch.tensor([[3, 4]]), gen_length=3)
    assert out.shape == (1, 5)
    assert out[0, 2] == model(torch.tensor([[3, 4]]))[0, -1].argmax()

"""Codecs, power normalisation (eq. 3.22) and the AWGN channel (eq. 3.24)."""

import math

import pytest
import torch

from thesis.semcom.channel import awgn, power_normalize, symbols_per_token


@pytest.mark.parametrize("ratio,symbols", [(0.005, 1), (0.1, 19), (0.15, 28), (0.25, 48), (0.5, 96)])
def test_symbols_per_token_for_deit_tiny(ratio, symbols):
    assert symbols_per_token(ratio, 192) == symbols


def test_packet_has_unit_average_power_over_sent_symbols():
    real, imag = torch.randn(3, 10, 6) * 4, torch.randn(3, 10, 6)
    keep = torch.ones(3, 10)
    keep[0, 3:7] = 0
    r, i = power_normalize(real, imag, keep, "packet")
    for b in range(3):
        sent = keep[b].bool()
        q = int(sent.sum()) * 6
        assert (r[b, sent].pow(2) + i[b, sent].pow(2)).sum().item() / q == pytest.approx(1.0, rel=1e-5)
        assert (r[b, ~sent] == 0).all() and (i[b, ~sent] == 0).all()
    r, i = power_normalize(real, imag, keep, "per_token")
    power = (r.pow(2) + i.pow(2)).mean(-1)
    assert torch.allclose(power[keep.bool()], torch.ones(int(keep.sum())), atol=1e-5)


@pytest.mark.parametrize("snr_db", [-10.0, 0.0, 13.0])
def test_awgn_noise_variance(snr_db):
    torch.manual_seed(0)
    zeros = torch.zeros(4, 500, 50)
    keep = torch.ones(4, 500)
    r, i = awgn(zeros, zeros, torch.full((4,), snr_db), keep)
    variance = (r.pow(2) + i.pow(2)).mean().item()                # E|n|^2 = sigma^2
    assert variance == pytest.approx(10 ** (-snr_db / 10), rel=0.05)
    assert r.var().item() == pytest.approx(10 ** (-snr_db / 10) / 2, rel=0.05)   # split evenly


def test_noiseless_channel_and_dropped_tokens_get_no_noise():
    real = torch.randn(2, 5, 3)
    assert awgn(real, real, None, torch.ones(2, 5))[0] is real
    keep = torch.tensor([[1, 0, 1, 1, 0], [1, 1, 1, 1, 1]], dtype=torch.float32)
    r, _ = awgn(torch.zeros(2, 5, 3), torch.zeros(2, 5, 3), torch.tensor([0.0, 0.0]), keep)
    assert (r[0, 1] == 0).all() and (r[0, 4] == 0).all() and not (r[0, 0] == 0).all()
    assert math.isfinite(r.sum().item())

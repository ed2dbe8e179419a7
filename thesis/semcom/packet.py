"""What a transmission costs: symbols q, compression factor rho = q / p, capacity bits, FLOPs.

The proposed link is analog (no quantisation): a packet is q complex channel symbols,
q = (transmitted tokens) * o_r, with the transmitted tokens = n_alpha kept patch tokens + class
token + budget token (Sec. 3.3.2; the static ViT AE sends n + 1). Bits enter only through the
digital baselines: q symbols at a given SNR carry at most q * log2(1 + SNR) bits.
"""

from __future__ import annotations

import numpy as np
from torch import Tensor

from thesis.semcom.channel import symbols_per_token


def packet_symbols(transmitted_tokens: Tensor, ratio: float, dim: int) -> Tensor:
    """q per sample = transmitted tokens * o_r."""
    return transmitted_tokens * symbols_per_token(ratio, dim)


def compression_factor(symbols: Tensor | np.ndarray | float, input_size: int) -> Tensor | np.ndarray | float:
    """rho = q / p (eq. 3.23), p = C * H * W input values."""
    return symbols / input_size


def capacity_bits(symbols: np.ndarray | float, snr_db: np.ndarray | float) -> np.ndarray | float:
    """b_max = q * log2(1 + SNR): what q symbols can carry at this SNR (Shannon capacity)."""
    return symbols * np.log2(1.0 + np.power(10.0, np.asarray(snr_db, dtype=float) / 10.0))


def sent_symbols(packet: Tensor) -> Tensor:
    """Complex symbols actually on the air in a transmitted packet (B, N, o): non-zero entries."""
    return (packet != 0).sum(dim=(1, 2))


def block_flops(tokens: Tensor | np.ndarray, dim: int, mlp_ratio: float = 4.0) -> Tensor | np.ndarray:
    """Forward FLOPs of one transformer block on `tokens` tokens, one multiply-add = one FLOP (the
    project's convention): qkv and output projections n * 4 d^2, attention scores and mixing
    2 * n^2 * d, MLP n * 2 * mlp_ratio * d^2. The FLOPs gain of Fig. 3.29 is a ratio, so the
    convention does not change it."""
    return tokens * 4 * dim**2 + 2 * tokens**2 * dim + tokens * 2 * mlp_ratio * dim**2

"""The analog link of Sec. 3.3.2: token compressors C_E^r / C_D^r, power normalisation, AWGN.

Every transmitted token (d features) becomes o_r = max(floor(r * d), 1) complex symbols: two
networks c_R, c_I give the real and imaginary parts. The packet is scaled so that its average
symbol power is 1, (1/q) ||s||^2 = 1 (eq. 3.22; `normalize="per_token"` scales each token's
symbols instead, as the authors' code does). The channel is s' = h s + n with h = 1 and
n ~ CN(0, sigma^2), sigma^2 = 10^(-SNR_dB / 10) (per-symbol SNR, eq. 3.24). The decoder
concatenates real and imaginary parts and maps them back to d features (c_D). Tokens that are
not transmitted (mask 0) carry no power and are ignored by the receiver's attention.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

NORMALIZE = ("packet", "per_token")


def symbols_per_token(ratio: float, dim: int) -> int:
    """o_r = max(floor(r * d), 1)."""
    return max(int(math.floor(ratio * dim + 1e-9)), 1)


def mlp(widths: Sequence[int]) -> nn.Sequential:
    """Linear layers between consecutive widths, ReLU between them, none at the end."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(widths) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def interpolated(start: int, end: int, layers: int) -> list[int]:
    """`layers + 1` widths linearly interpolated from start to end."""
    return [int(round(w)) for w in np.linspace(start, end, layers + 1)]


def power_normalize(real: Tensor, imag: Tensor, keep: Tensor, mode: str = "packet") -> tuple[Tensor, Tensor]:
    """Scale the complex symbols (B, N, o) of the kept tokens (keep: (B, N) in {0, 1}) to unit
    average power per packet (eq. 3.22) or per token; dropped tokens are zeroed."""
    if mode not in NORMALIZE:
        raise ValueError(f"normalize must be one of {NORMALIZE}, got {mode!r}")
    keep = keep.unsqueeze(-1).to(real.dtype)
    power = (real.pow(2) + imag.pow(2)) * keep
    if mode == "packet":
        count = keep.sum((1, 2), keepdim=True) * real.shape[-1]
        mean = power.sum((1, 2), keepdim=True) / count.clamp_min(1)
    else:
        mean = power.mean(-1, keepdim=True)
    scale = keep / mean.clamp_min(1e-12).sqrt()
    return real * scale, imag * scale


def awgn(real: Tensor, imag: Tensor, snr_db: Tensor | None, keep: Tensor) -> tuple[Tensor, Tensor]:
    """s' = s + n, n ~ CN(0, 10^(-SNR/10)) on the kept tokens; `snr_db` is (B,) or None (no noise)."""
    if snr_db is None:
        return real, imag
    sigma2 = torch.pow(10.0, -snr_db.to(real.dtype) / 10).reshape(-1, 1, 1)
    std = (sigma2 / 2).sqrt() * keep.unsqueeze(-1).to(real.dtype)
    return real + torch.randn_like(real) * std, imag + torch.randn_like(imag) * std


class TokenCodec(nn.Module):
    """One compression ratio r: C_E^r = (c_R, c_I), C_D^r = c_D (3-layer MLPs by default)."""

    def __init__(self, dim: int, ratio: float, layers: int = 3):
        super().__init__()
        self.ratio = ratio
        self.symbols = symbols_per_token(ratio, dim)
        self.real = mlp(interpolated(dim, self.symbols, layers))
        self.imag = mlp(interpolated(dim, self.symbols, layers))
        self.decoder = mlp(interpolated(2 * self.symbols, dim, layers))

    def encode(self, tokens: Tensor, keep: Tensor, normalize: str = "packet") -> tuple[Tensor, Tensor]:
        return power_normalize(self.real(tokens), self.imag(tokens), keep, normalize)

    def decode(self, real: Tensor, imag: Tensor) -> Tensor:
        return self.decoder(torch.cat([real, imag], dim=-1))


class Link(nn.Module):
    """The ensemble of codecs, one per ratio in `ratios`, sharing one channel."""

    def __init__(self, dim: int, ratios: Sequence[float], layers: int = 3, normalize: str = "packet"):
        super().__init__()
        if normalize not in NORMALIZE:
            raise ValueError(f"normalize must be one of {NORMALIZE}, got {normalize!r}")
        self.ratios = [float(r) for r in ratios]
        self.codecs = nn.ModuleList(TokenCodec(dim, r, layers) for r in self.ratios)
        self.normalize = normalize

    def index(self, ratio: float) -> int:
        matches = [i for i, r in enumerate(self.ratios) if abs(r - ratio) < 1e-9]
        if not matches:
            raise ValueError(f"no codec for r={ratio}; this link has r in {self.ratios}")
        return matches[0]

    def forward(self, tokens: Tensor, keep: Tensor, ratio: float, snr_db: Tensor | None) -> tuple[Tensor, Tensor]:
        """Encode the kept tokens, send them through the AWGN channel, decode; returns the received
        tokens (B, N, d) and the transmitted complex packet (B, N, o_r) (zeros where not sent)."""
        codec = self.codecs[self.index(ratio)]
        real, imag = codec.encode(tokens, keep, self.normalize)
        sent = torch.complex(real, imag)
        real, imag = awgn(real, imag, snr_db, keep)
        return codec.decode(real, imag), sent

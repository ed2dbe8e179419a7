"""The MobileNetV3 DJSCC baselines of Sec. 3.3.6 ("MNv3" and "MNv3 CNN", Table 3.10, Fig. 3.30).

A timm MobileNetV3 is split after its first s feature stages (`blocks[:s]`, the thesis's s = 3):
the device runs the stem and those stages, the server runs the remaining stages and the head.
At the split the feature map (C channels, H x W positions) is compressed to complex channel
symbols, scaled to unit average power (eq. 3.22), sent through the AWGN channel (eq. 3.24) and
decoded back to C channels. Symbols are counted as for the ViT pipelines: every position of the
map plays the part of a token of C features and costs o_r = max(floor(r * C), 1) complex symbols,
so q = H * W * o_r and rho = q / p is on the same scale as the ViT AE's (n + 1) * o_r.

Two compressors, one per baseline:
  cnn  "MNv3 CNN": 3x3 convolutions C -> 2 o_r channels (real and imaginary halves) and back;
  mlp  "MNv3": the token MLPs of the ViT pipelines (`channel.TokenCodec`) applied to every
       position's C features (the thesis's "flattened features": one vector per position).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from thesis.semcom.channel import NORMALIZE, TokenCodec, awgn, interpolated, power_normalize, symbols_per_token

CODECS = ("cnn", "mlp")


def conv_stack(widths: Sequence[int]) -> nn.Sequential:
    """3x3 convolutions (stride 1, same padding) between consecutive widths, ReLU between them."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Conv2d(a, b, kernel_size=3, padding=1))
        if i < len(widths) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def to_positions(maps: Tensor) -> Tensor:
    """(B, K, H, W) -> (B, H * W, K): one row per position, as the ViT pipelines hold tokens."""
    return maps.flatten(2).transpose(1, 2)


def to_maps(rows: Tensor, size: tuple[int, int]) -> Tensor:
    """(B, H * W, K) -> (B, K, H, W)."""
    return rows.transpose(1, 2).reshape(rows.shape[0], rows.shape[2], *size)


class ConvCodec(nn.Module):
    """MNv3 CNN compressor for one ratio r: C -> 2 o_r channels (encoder), 2 o_r -> C (decoder)."""

    def __init__(self, channels: int, ratio: float, layers: int = 3):
        super().__init__()
        self.ratio = ratio
        self.symbols = symbols_per_token(ratio, channels)
        self.encoder = conv_stack(interpolated(channels, 2 * self.symbols, layers))
        self.decoder = conv_stack(interpolated(2 * self.symbols, channels, layers))

    def project(self, features: Tensor) -> tuple[Tensor, Tensor]:
        """Real and imaginary symbols, each (B, H * W, o_r)."""
        real, imag = self.encoder(features).chunk(2, dim=1)
        return to_positions(real), to_positions(imag)

    def restore(self, real: Tensor, imag: Tensor, size: tuple[int, int]) -> Tensor:
        return self.decoder(torch.cat([to_maps(real, size), to_maps(imag, size)], dim=1))


class PositionMLPCodec(nn.Module):
    """MNv3 compressor for one ratio r: the ViT pipelines' token MLPs on every position's C features."""

    def __init__(self, channels: int, ratio: float, layers: int = 3):
        super().__init__()
        self.ratio = ratio
        self.mlp = TokenCodec(channels, ratio, layers)
        self.symbols = self.mlp.symbols

    def project(self, features: Tensor) -> tuple[Tensor, Tensor]:
        rows = to_positions(features)
        return self.mlp.real(rows), self.mlp.imag(rows)

    def restore(self, real: Tensor, imag: Tensor, size: tuple[int, int]) -> Tensor:
        return to_maps(self.mlp.decode(real, imag), size)


class FeatureLink(nn.Module):
    """One compressor per ratio (kind `cnn` or `mlp`) sharing the power normalisation and channel."""

    def __init__(self, channels: int, ratios: Sequence[float], kind: str = "cnn", layers: int = 3,
                 normalize: str = "packet"):
        super().__init__()
        if kind not in CODECS:
            raise ValueError(f"MobileNetV3 codec must be one of {CODECS}, got {kind!r}")
        if normalize not in NORMALIZE:
            raise ValueError(f"normalize must be one of {NORMALIZE}, got {normalize!r}")
        codec = ConvCodec if kind == "cnn" else PositionMLPCodec
        self.kind, self.normalize = kind, normalize
        self.ratios = [float(r) for r in ratios]
        self.codecs = nn.ModuleList(codec(channels, r, layers) for r in self.ratios)

    def codec(self, ratio: float) -> nn.Module:
        for r, codec in zip(self.ratios, self.codecs):
            if abs(r - ratio) < 1e-9:
                return codec
        raise ValueError(f"no codec for r={ratio}; this link has r in {self.ratios}")

    def forward(self, features: Tensor, ratio: float, snr_db: Tensor | None) -> tuple[Tensor, Tensor]:
        """Received feature map (B, C, H, W) and the transmitted packet (B, H * W, o_r) complex."""
        codec = self.codec(ratio)
        real, imag = codec.project(features)
        every = torch.ones(real.shape[:2], dtype=real.dtype, device=real.device)
        real, imag = power_normalize(real, imag, every, self.normalize)
        sent = torch.complex(real, imag)
        real, imag = awgn(real, imag, snr_db, every)
        return codec.restore(real, imag, tuple(features.shape[-2:])), sent


def stage_channels(stage: nn.Module) -> int:
    """Output channels of a MobileNetV3 stage: those of its last convolution."""
    convs = [m for m in stage.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError("this MobileNetV3 stage has no convolution: check the split point")
    return convs[-1].out_channels


class SplitMobileNet(nn.Module):
    """A timm MobileNetV3 split after `split` feature stages, with an optional link at the split."""

    def __init__(self, net: nn.Module, split: int):
        super().__init__()
        if not all(hasattr(net, a) for a in ("conv_stem", "bn1", "blocks", "forward_head")):
            raise ValueError(f"{type(net).__name__} is not a timm MobileNetV3: use e.g. mobilenetv3_small_100")
        if not 1 <= split < len(net.blocks):
            raise ValueError(f"split must be in 1..{len(net.blocks) - 1} for this MobileNetV3, got {split}")
        self.net, self.split = net, split
        self.channels = stage_channels(net.blocks[split - 1])
        self.link: FeatureLink | None = None

    def attach_link(self, link: FeatureLink) -> None:
        self.link = link

    def device(self, images: Tensor) -> Tensor:
        """Edge-device part: stem and the first `split` stages; (B, C, H, W)."""
        return self.net.blocks[: self.split](self.net.bn1(self.net.conv_stem(images)))

    def server(self, features: Tensor) -> Tensor:
        """Edge-server part: the remaining stages and the classifier head; logits."""
        return self.net.forward_head(self.net.blocks[self.split:](features))

    def forward(self, images: Tensor, ratio: float | None = None,
                snr_db: Tensor | float | None = None) -> tuple[Tensor, Tensor | None]:
        """Logits and the transmitted packet (None when no ratio is given: the link is bypassed)."""
        features = self.device(images)
        packet = None
        if ratio is not None:
            if self.link is None:
                raise ValueError("a ratio was given but no link is attached: call attach_link first")
            if snr_db is not None and not torch.is_tensor(snr_db):
                snr_db = torch.full((len(images),), float(snr_db), device=images.device)
            features, packet = self.link(features, ratio, snr_db)
        return self.server(features), packet


def packet_positions(features: Tensor) -> int:
    """Positions H * W of a split feature map: the count that plays the part of the ViT's tokens."""
    return int(features.shape[-2] * features.shape[-1])

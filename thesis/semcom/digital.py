"""Digital, capacity-achieving baselines of Sec. 3.3 (Figs. 3.27-3.28): compress the image, send it
at the Shannon rate, classify it at the server with a ViT trained on clean images.

With q = rho * p symbols at a given SNR, at most b_max = q * log2(1 + SNR) bits arrive. Resize:
the largest L >= 1 with 24 L^2 <= b_max (an L x L x 3 image at 8 bits per channel), then
upsampled back to full size. JPEG: the highest quality whose file (in bits) fits in b_max. When
nothing fits the image counts as misclassified.
"""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from thesis.semcom.packet import capacity_bits



def to_uint8(images: Tensor, mean: tuple[float, ...] | None, std: tuple[float, ...] | None) -> np.ndarray:
    """Model inputs (N, 3, H, W) back to 8-bit pixels (N, H, W, 3), undoing the normalisation."""
    x = images.detach().float()
    if mean is not None and std is not None:
        x = x * torch.tensor(std).view(1, -1, 1, 1) + torch.tensor(mean).view(1, -1, 1, 1)
    return (x.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()


def from_uint8(pixels: np.ndarray, mean: tuple[float, ...] | None, std: tuple[float, ...] | None) -> Tensor:
    x = torch.from_numpy(pixels).float().permute(0, 3, 1, 2) / 255
    if mean is not None and std is not None:
        x = (x - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)
    return x


def resize_side(bits: np.ndarray | float, max_side: int) -> np.ndarray:
    """Largest L >= 1 with 24 L^2 <= bits, capped at the image side; 0 when not even 1 pixel fits."""
    side = np.floor(np.sqrt(np.asarray(bits, dtype=float) / 24.0)).astype(int)
    return np.minimum(side, max_side)


def resize_roundtrip(pixels: np.ndarray, side: int) -> np.ndarray:
    """Each image down to side x side (bilinear), then back up to its size: what the server sees."""
    h, w = pixels.shape[1:3]
    out = [np.asarray(Image.fromarray(p).resize((side, side), Image.BILINEAR).resize((w, h), Image.BILINEAR))
           for p in pixels]
    return np.stack(out)


def jpeg_bytes(pixel: np.ndarray, quality: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixel).save(buffer, format="JPEG", quality=int(quality))
    return buffer.getvalue()


def jpeg_roundtrip(pixels: np.ndarray, quality: int) -> tuple[np.ndarray, np.ndarray]:
    """Decoded images and their file sizes in bits at one JPEG quality."""
    files = [jpeg_bytes(p, quality) for p in pixels]
    decoded = np.stack([np.asarray(Image.open(io.BytesIO(f)).convert("RGB")) for f in files])
    return decoded, np.array([8 * len(f) for f in files])


def resize_accuracy(correct_by_side: dict[int, np.ndarray], max_side: int, rho: float, snr_db: float,
                    input_size: int) -> float:
    """Accuracy of the resize scheme; correct_by_side[L][i] = image i right when sent at side L."""
    side = int(resize_side(capacity_bits(rho * input_size, snr_db), max_side))
    return float(correct_by_side[side].mean()) if side >= 1 else 0.0


def needed_sides(rhos, snrs, input_size: int, max_side: int) -> list[int]:
    """The resize sides some (rho, SNR) of the grid selects (0 = nothing fits, left out)."""
    sides = {int(resize_side(capacity_bits(r * input_size, s), max_side)) for r in rhos for s in snrs}
    return sorted(sides - {0})


def jpeg_accuracy(correct: np.ndarray, bits: np.ndarray, rho: float, snr_db: float, input_size: int) -> float:
    """Accuracy of the JPEG scheme: per image, the highest quality that fits (qualities in rows,
    highest first); correct[k, i] and bits[k, i] for quality k, image i."""
    budget = capacity_bits(rho * input_size, snr_db)
    fits = bits <= budget
    first = np.where(fits.any(0), fits.argmax(0), -1)
    hit = np.where(first >= 0, correct[np.maximum(first, 0), np.arange(bits.shape[1])], False)
    return float(hit.mean())

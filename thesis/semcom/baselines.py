"""Measurements for the digital baselines (Resize, JPEG) on the test images, with the clean ViT.

Each test image is classified once per resize side L that the (rho, SNR) grid can select and once
per JPEG quality (highest first), and the
JPEG file sizes are recorded; the accuracy of a scheme at any (rho, SNR) is then a lookup
(`thesis.semcom.digital`), so the curves cost nothing per grid point.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader

from thesis.semcom.digital import from_uint8, jpeg_accuracy, jpeg_roundtrip, resize_accuracy, resize_roundtrip, \
    to_uint8
from thesis.semcom.evaluate import first_images
from thesis.semcom.model import SemanticViT


@torch.no_grad()
def digital_tables(classifier: SemanticViT, loader: DataLoader, mean, std, sides, qualities,
                   limit: int | None = None) -> dict[str, object]:
    """resize[L][i], jpeg[k, i] correctness and jpeg_bits[k, i] for the first `limit` test images."""
    classifier.eval()
    resize, jpeg, bits = [], [], []
    for _, images, labels in first_images(loader, limit):
        pixels = to_uint8(images, mean, std)
        right = lambda px: (classifier(from_uint8(px, mean, std), 1.0, hard=True)[0].argmax(-1)  # noqa: E731
                            == labels).numpy()
        resize.append({L: right(resize_roundtrip(pixels, L)) for L in sides})
        rows, sizes = [], []
        for q in qualities:
            decoded, size = jpeg_roundtrip(pixels, q)
            rows.append(right(decoded))
            sizes.append(size)
        jpeg.append(np.stack(rows))
        bits.append(np.stack(sizes))
    return {"resize": {L: np.concatenate([part[L] for part in resize]) for L in sides},
            "jpeg": np.concatenate(jpeg, 1), "jpeg_bits": np.concatenate(bits, 1)}


def digital_rows(tables: dict[str, object], rhos, snrs, input_size: int, max_side: int) -> list[dict]:
    rows = []
    for snr in snrs:
        for rho in rhos:
            rows.append({"scheme": "resize", "snr_db": snr, "rho": float(rho),
                         "accuracy": resize_accuracy(tables["resize"], max_side, rho, snr, input_size)})
            rows.append({"scheme": "jpeg", "snr_db": snr, "rho": float(rho),
                         "accuracy": jpeg_accuracy(tables["jpeg"], tables["jpeg_bits"], rho, snr, input_size)})
    return rows

"""Measurements on a split: per-image correctness and realised rho over the (alpha, r, SNR) grid.

One pass over the images: the edge-device part (blocks 1..s with selection) runs once per alpha,
the link and server part once per (r, SNR). The result `Grid` is what every experiment reads:
accuracy-vs-rho curves (means), the controller's proxy table Lambda (on training images) and its
deployment (per test image). Channel noise is seeded per (batch, configuration, SNR), so two
evaluations of one model give the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from thesis.semcom.model import SemanticViT, compact
from thesis.semcom.packet import block_flops, compression_factor, packet_symbols


@dataclass
class Grid:
    """correct (N, C, S) bool; rho (N, C); kept (N, C) fraction of patch tokens sent; configs: C
    (alpha, r) pairs; snrs: S grid values in dB."""

    correct: np.ndarray
    rho: np.ndarray
    kept: np.ndarray
    configs: list[tuple[float, float]]
    snrs: list[float]

    @property
    def accuracy(self) -> np.ndarray:
        """(C, S) mean accuracy."""
        return self.correct.mean(0)

    @property
    def mean_rho(self) -> np.ndarray:
        return self.rho.mean(0)

    def rows(self, pipeline: str) -> list[dict]:
        acc, rho, kept = self.accuracy, self.mean_rho, self.kept.mean(0)
        return [{"pipeline": pipeline, "alpha": a, "r": r, "snr_db": snr, "accuracy": float(acc[c, s]),
                 "rho": float(rho[c]), "kept_fraction": float(kept[c])}
                for c, (a, r) in enumerate(self.configs) for s, snr in enumerate(self.snrs)]


def input_size(images: torch.Tensor) -> int:
    """p = C * H * W."""
    return int(np.prod(images.shape[1:]))


def first_images(loader: DataLoader, limit: int | None, desc: str | None = None):
    """(batch index, images, labels) over the loader's first `limit` images (all when None), the last
    batch cut to fit; with a progress bar when `desc` is given."""
    seen = 0
    for b, (images, labels) in enumerate(tqdm(loader, desc=desc, leave=False) if desc else loader):
        if limit is not None:
            if seen >= limit:
                break
            images, labels = images[: limit - seen], labels[: limit - seen]
        seen += len(images)
        yield b, images, labels


@torch.no_grad()
def evaluate_grid(model: SemanticViT, loader: DataLoader, alphas, ratios, snrs, seed: int = 0,
                  limit: int | None = None, desc: str = "grid") -> Grid:
    """Correctness of every image under every (alpha, r) configuration and grid SNR (None = no noise)."""
    model.eval()
    alphas = list(alphas) if model.adaptive else [1.0]
    configs = [(float(a), float(r)) for a in alphas for r in ratios]
    correct, rho, kept = [], [], []
    for b, images, labels in first_images(loader, limit, desc):
        p = input_size(images)
        c_batch = np.zeros((len(images), len(configs), len(snrs)), dtype=bool)
        r_batch = np.zeros((len(images), len(configs)))
        k_batch = np.zeros((len(images), len(configs)))
        for ai, alpha in enumerate(alphas):
            x, keep, _, _, _ = model.encode(images, alpha, hard=True)
            sent = keep.sum(-1)
            x, keep = compact(x, keep)
            for ri, ratio in enumerate(ratios):
                c = ai * len(ratios) + ri
                r_batch[:, c] = compression_factor(packet_symbols(sent, ratio, model.dim), p).numpy()
                k_batch[:, c] = ((sent - (2 if model.adaptive else 1)) / model.num_patches).numpy()
                for si, snr in enumerate(snrs):
                    torch.manual_seed(hash((seed, b, c, si)) % (2**31))
                    logits, _, _ = model.decode(x, keep, ratio, snr, hard=True)
                    c_batch[:, c, si] = (logits.argmax(-1) == labels).numpy()
        correct.append(c_batch)
        rho.append(r_batch)
        kept.append(k_batch)
    return Grid(np.concatenate(correct), np.concatenate(rho), np.concatenate(kept), configs, list(snrs))


def envelope(rho: np.ndarray, accuracy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Upper envelope (best accuracy reachable at rho or less), points sorted by rho."""
    order = np.argsort(rho, kind="stable")
    return rho[order], np.maximum.accumulate(accuracy[order])


def envelope_at(rho: np.ndarray, accuracy: np.ndarray, at: float) -> float:
    """Best accuracy among configurations with rho <= `at` (0 when none is that small)."""
    ok = rho <= at + 1e-12
    return float(accuracy[ok].max()) if ok.any() else 0.0


@torch.no_grad()
def selection_profile(model: SemanticViT, loader: DataLoader, alphas, limit: int | None = None,
                      mlp_ratio: float = 4.0) -> list[dict]:
    """Per alpha (no link): accuracy, soft mean M-bar^s, hard kept fraction at block s and the
    inference FLOPs gain against the same model keeping every token (Fig. 3.29)."""
    model.eval()
    rows = []
    for alpha in alphas:
        hits, soft, hard, flops, full, seen = 0, 0.0, 0.0, 0.0, 0.0, 0
        for images, labels in loader:
            if limit is not None and seen >= limit:
                break
            logits, trace = model(images, float(alpha), None, None, hard=True)
            hits += int((logits.argmax(-1) == labels).sum())
            if trace.masks:
                soft += float(trace.masks[-1].mean(-1).sum())
            else:
                soft += len(images)
            hard += float(trace.kept_patches.sum()) / model.num_patches
            flops += float(block_flops(trace.block_tokens, model.dim, mlp_ratio).sum())
            all_tokens = torch.full_like(trace.block_tokens, model.num_patches + trace.extra_tokens)
            full += float(block_flops(all_tokens, model.dim, mlp_ratio).sum())
            seen += len(images)
        rows.append({"alpha": float(alpha), "accuracy": hits / seen, "soft_mean": soft / seen,
                     "hard_kept": hard / seen, "flops_gain": 1.0 - flops / full})
    return rows

"""TopK SAE training on a stream of activation buffers, for SAEs trained on billions of tokens
(thesis 5.1.8: Llama2-7B, 10B RedPajama tokens) that never fit in memory at once. The rules are
`sae_train`'s (FVU loss, no sparsity penalty for TopK, unit-norm decoder rows with the parallel
gradient removed, lr = base / sqrt(n / 2^14)); what differs: b_dec starts at the mean of the first
buffer, each buffer is visited once in a seeded random order (every token seen once, as in
EleutherAI/sae), and the FVU denominator is the variance of each batch."""

from __future__ import annotations

import math

import torch

from thesis.spare.sae import SparseAutoencoder
from thesis.spare.sae_train import _project_decoder_grad, init_sae


class StreamingSAETrainer:
    """One SAE, trained by `fit_buffer` calls on successive (N, d) activation buffers."""

    def __init__(self, n: int, k: int | None = 32, activation: str = "topk", batch_size: int = 4096,
                 lr: float | None = None, lr_scale: float = 1.0, l1: float = 0.0, seed: int = 0,
                 device: torch.device | str = "cpu") -> None:
        self.n, self.k, self.activation, self.batch_size, self.l1 = n, k, activation, batch_size, l1
        self.lr = (lr if lr is not None else 2e-4 / math.sqrt(n / 2 ** 14)) * lr_scale
        self.generator = torch.Generator().manual_seed(seed)
        self.device = torch.device(device)
        self.sae: SparseAutoencoder | None = None
        self.optimiser: torch.optim.Optimizer | None = None
        self.tokens = 0
        self.losses: list[float] = []

    def _start(self, first: torch.Tensor) -> None:
        self.sae = init_sae(first, self.n, self.k, self.activation, self.generator).to(self.device).train()
        self.optimiser = torch.optim.Adam(self.sae.parameters(), lr=self.lr)

    def fit_buffer(self, acts: torch.Tensor) -> list[float]:
        """One pass over `acts` in batches of `batch_size` (the last may be smaller); the step losses."""
        acts = acts.float()
        if self.sae is None:
            self._start(acts)
        sae, losses = self.sae, []
        for index in torch.randperm(len(acts), generator=self.generator).split(self.batch_size):
            batch = acts[index].to(self.device)
            variance = (batch - batch.mean(0)).pow(2).sum(1).mean().clamp_min(1e-12)
            z = sae.encode(batch)
            loss = (sae.decode(z) - batch).pow(2).sum(1).mean() / variance
            if self.l1:
                loss = loss + self.l1 * z.abs().sum(1).mean()
            self.optimiser.zero_grad(set_to_none=True)
            loss.backward()
            _project_decoder_grad(sae)
            self.optimiser.step()
            with torch.no_grad():
                sae.W_dec /= sae.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-8)
            losses.append(loss.item())
        self.tokens += len(acts)
        self.losses += losses
        return losses

    def result(self) -> SparseAutoencoder:
        if self.sae is None:
            raise ValueError("the SAE saw no activations: the corpus gave no tokens (check data.root and data.files)")
        return self.sae.eval()

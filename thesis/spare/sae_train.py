"""Training a TopK (or L1 ReLU) SAE on collected activations, the way the authors trained theirs for
Llama2-7B (Gao et al. / EleutherAI/sae): loss = FVU, no sparsity penalty for TopK, decoder rows
kept at unit norm (the gradient component along each row removed before the step, rows
renormalised after it), b_dec initialised to the data mean, lr = base / sqrt(n / 2^14)."""

from __future__ import annotations

import math

import torch
from tqdm.auto import tqdm

from thesis.spare.sae import SparseAutoencoder


def init_sae(acts: torch.Tensor, n: int, k: int | None, activation: str, generator: torch.Generator) -> SparseAutoencoder:
    d = acts.shape[1]
    sae = SparseAutoencoder(d, n, activation=activation, k=k)
    with torch.no_grad():
        W = torch.randn(n, d, generator=generator)
        W /= W.norm(dim=1, keepdim=True)
        sae.W_dec.copy_(W)
        sae.W_enc.copy_(W.T)
        sae.b_dec.copy_(acts.mean(0))
    return sae


def _project_decoder_grad(sae: SparseAutoencoder) -> None:
    """Remove the gradient component parallel to each (unit) decoder row."""
    if sae.W_dec.grad is None:
        return
    W = sae.W_dec.data
    sae.W_dec.grad -= (sae.W_dec.grad * W).sum(1, keepdim=True) * W


def train_sae(acts: torch.Tensor, n: int, k: int | None = 16, activation: str = "topk", steps: int = 1000,
              batch_size: int = 1024, lr: float | None = None, lr_scale: float = 1.0, l1: float = 0.0,
              seed: int = 0, progress: bool = False) -> tuple[SparseAutoencoder, list[float]]:
    """Train an SAE on `acts` (N, d); returns the SAE and its per-step loss (FVU [+ l1 * L1])."""
    acts = acts.float()
    generator = torch.Generator().manual_seed(seed)
    sae = init_sae(acts, n, k, activation, generator)
    lr = (lr if lr is not None else 2e-4 / math.sqrt(n / 2 ** 14)) * lr_scale
    optimiser = torch.optim.Adam(sae.parameters(), lr=lr)
    variance = (acts - acts.mean(0)).pow(2).sum(1).mean().clamp_min(1e-12)
    losses = []
    for _ in tqdm(range(steps), desc="sae", disable=not progress, leave=False):
        batch = acts[torch.randint(len(acts), (min(batch_size, len(acts)),), generator=generator)]
        z = sae.encode(batch)
        loss = (sae.decode(z) - batch).pow(2).sum(1).mean() / variance
        if l1:
            loss = loss + l1 * z.abs().sum(1).mean()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        _project_decoder_grad(sae)
        optimiser.step()
        with torch.no_grad():
            sae.W_dec /= sae.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-8)
        losses.append(loss.item())
    return sae.eval(), losses

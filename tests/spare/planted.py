"""A planted sparse dictionary for the SAE tests: unit atoms, k active per sample with weights in [1, 2)."""

import torch


def planted(n_samples=4096, d=16, n=32, k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    atoms = torch.randn(n, d, generator=g)
    atoms /= atoms.norm(dim=1, keepdim=True)
    codes = torch.zeros(n_samples, n)
    idx = torch.stack([torch.randperm(n, generator=g)[:k] for _ in range(n_samples)])
    codes.scatter_(1, idx, 1 + torch.rand(n_samples, k, generator=g))
    return codes @ atoms, atoms

"""A tiny bidirectional attention LM whose attention calls F.scaled_dot_product_attention."""

import torch
import torch.nn.functional as F
from torch import nn


class ToyLM(nn.Module):
    def __init__(self, vocab: int = 12, dim: int = 16, heads: int = 2, layers: int = 2, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.heads = heads
        self.embed = nn.Embedding(vocab, dim)
        self.position = nn.Embedding(64, dim)
        self.qkv = nn.ModuleList(nn.Linear(dim, 3 * dim) for _ in range(layers))
        self.head = nn.Linear(dim, vocab)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids) + self.position(torch.arange(ids.shape[1]))
        for qkv in self.qkv:
            q, k, v = (t.unflatten(-1, (self.heads, -1)).transpose(1, 2) for t in qkv(x).chunk(3, dim=-1))
            x = x + F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2)
        return self.head(x)

"""Small networks for Chapter 2's miniatures: a dense MLP, its early-exit twin and its MoE twin.

They are the smallest models on which the chapter's primitives show their trade-offs: an exit
after every block (eqs. 2.13-2.14) and a mixture-of-experts layer in place of a dense block
(eq. 2.18), on the same 64-dim digit vectors.
"""

from __future__ import annotations

from torch import nn

from thesis.condcomp.early_exit import MultiExit
from thesis.condcomp.moe import MoE


def mlp(in_dim: int, hidden: list[int], num_classes: int) -> nn.Sequential:
    """ReLU MLP `in_dim -> hidden... -> num_classes` (the dense reference)."""
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(in_dim, width), nn.ReLU()]
        in_dim = width
    return nn.Sequential(*layers, nn.Linear(in_dim, num_classes))


def multi_exit_mlp(in_dim: int, hidden: list[int], num_classes: int) -> MultiExit:
    """The dense MLP cut into one block per hidden layer, with a linear exit head after each.

    Its last exit is exactly the dense MLP's architecture, so the two are comparable.
    """
    widths = [in_dim, *hidden]
    blocks = [nn.Sequential(nn.Linear(a, b), nn.ReLU()) for a, b in zip(widths, widths[1:])]
    heads = [nn.Linear(w, num_classes) for w in hidden]
    return MultiExit(blocks, heads)


class MoEMLP(nn.Module):
    """Embedding -> residual MoE layer of two-layer experts (eq. 2.18) -> linear classifier.

    Every sample is one token for the router. With `pre_norm` the MoE (router and experts) reads
    the LayerNorm of the embedding, as in a pre-LN transformer block; without it the router sees
    the raw ReLU features, which are all non-negative and so strongly aligned across tokens.
    `forward` returns (logits, Routing).
    """

    def __init__(self, in_dim: int, dim: int, expert_hidden: int, num_experts: int, num_classes: int,
                 router: str = "topk", k: int = 1, capacity_factor: float = 1.0, pre_norm: bool = True):
        super().__init__()
        self.embed = nn.Sequential(nn.Linear(in_dim, dim), nn.ReLU())
        self.norm = nn.LayerNorm(dim) if pre_norm else nn.Identity()
        experts = [nn.Sequential(nn.Linear(dim, expert_hidden), nn.ReLU(), nn.Linear(expert_hidden, dim))
                   for _ in range(num_experts)]
        self.moe = MoE(experts, dim=dim, router=router, k=k, capacity_factor=capacity_factor)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x):
        h = self.embed(x)
        out, routing = self.moe(self.norm(h))
        return self.head(h + out), routing

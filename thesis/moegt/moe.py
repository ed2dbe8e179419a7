"""The mixture-of-experts block of the MGT: experts (eq. 5.9), noisy top-k gating (Shazeer et al.
2017, thesis supplement S1), the top-k combination (eq. 5.10) and the load-balancing loss
(eqs. 5.11-5.13).

Nodes are routed independently (token choice, no capacity limit). Defaults follow the thesis
equations; `noise_mode`, `noise_at_eval` and `share_expert_weights` reproduce the behaviour of
the authors' inspected code for parity runs only (README, "thesis vs code").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

NoiseMode = Literal["per_node", "per_batch"]


class Expert(nn.Module):
    """E(x) = Dropout(W_2 LeakyReLU(W_1 x + b_1) + b_2) (eq. 5.9)."""

    def __init__(self, dim: int, hidden: int, dropout: float = 0.0):
        super().__init__()
        self.inner = nn.Linear(dim, hidden)
        self.outer = nn.Linear(hidden, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.outer(F.leaky_relu(self.inner(x))))


def smooth_load(clean: Tensor, noisy: Tensor, noise_std: Tensor, k: int) -> Tensor:
    """Load(X)_i = sum_x P(x, i) (eq. 5.12), P(x, i) = Phi((clean_i - kth_excluding(H(x), k, i)) / std_i)
    (eq. 5.13).

    kth_excluding(H, k, i) is the k-th largest of H without component i: the (k+1)-th largest of H
    when H_i is among the top k, the k-th largest otherwise. Needs k < number of experts.
    """
    top = noisy.topk(k + 1, dim=-1).values
    kth, next_after = top[:, k - 1 : k], top[:, k : k + 1]
    threshold = torch.where(noisy >= kth, next_after, kth)
    normal = torch.distributions.Normal(torch.zeros((), device=clean.device), torch.ones((), device=clean.device))
    return normal.cdf((clean - threshold) / noise_std).sum(0)


def load_balancing_loss(load: Tensor) -> Tensor:
    """CV(Load)^2 (eq. 5.11 without w_load): population variance over squared mean across experts.

    Zero iff every expert carries the same load; n - 1 when one expert takes all of it.
    """
    return load.var(unbiased=False) / load.mean().pow(2).clamp_min(1e-12)


@dataclass
class MoERouting:
    """One MoE call's decisions over its nodes: top-k expert ids (nodes, k), their gate weights
    (nodes, k), the smooth per-expert load (eq. 5.12) and CV(Load)^2."""

    experts: Tensor
    gates: Tensor
    load: Tensor
    balance: Tensor


class NoisyTopKMoE(nn.Module):
    """y = sum over the k selected experts of G(x)_i E_i(x) (eq. 5.10), with
    G(x) = Softmax(KeepTopK(H(x), k)), H(x)_i = (x W_g)_i + StandardNormal() softplus(x W_noise)_i.

    W_g and W_noise are bias-free; W_noise starts at zero. Noise is drawn per node and per expert,
    during training only, unless `noise_mode="per_batch"` (one vector for the whole call) or
    `noise_at_eval=True`. `share_expert_weights=True` makes every expert the same module.
    """

    def __init__(self, dim: int, num_experts: int = 6, expert_hidden: int = 20, k: int = 2, dropout: float = 0.0,
                 noise_mode: NoiseMode = "per_node", noise_at_eval: bool = False, share_expert_weights: bool = False):
        super().__init__()
        if not 0 < k < num_experts:
            raise ValueError(f"top-k needs 0 < k < num_experts (eq. 5.13 uses the (k+1)-th gate), got k={k}, "
                             f"num_experts={num_experts}")
        if noise_mode not in ("per_node", "per_batch"):
            raise ValueError(f"noise_mode must be 'per_node' or 'per_batch', got {noise_mode!r}")
        self.k, self.noise_mode, self.noise_at_eval = k, noise_mode, noise_at_eval
        self.gate = nn.Linear(dim, num_experts, bias=False)
        self.noise = nn.Linear(dim, num_experts, bias=False)
        nn.init.zeros_(self.noise.weight)
        shared = Expert(dim, expert_hidden, dropout) if share_expert_weights else None
        self.experts = nn.ModuleList([shared or Expert(dim, expert_hidden, dropout) for _ in range(num_experts)])

    def route(self, x: Tensor) -> MoERouting:
        clean = self.gate(x)
        noise_std = F.softplus(self.noise(x))
        noisy = clean
        if self.training or self.noise_at_eval:
            shape = clean.shape if self.noise_mode == "per_node" else clean.shape[-1:]
            noisy = clean + torch.randn(shape, device=x.device, dtype=x.dtype) * noise_std
        top, experts = noisy.topk(self.k, dim=-1)
        load = smooth_load(clean, noisy, noise_std, self.k)
        return MoERouting(experts=experts, gates=top.softmax(-1), load=load, balance=load_balancing_loss(load))

    def forward(self, x: Tensor) -> tuple[Tensor, MoERouting]:
        """x: (nodes, dim) -> (nodes, dim) and the routing."""
        routing = self.route(x)
        out = torch.zeros_like(x)
        for e, expert in enumerate(self.experts):
            node, slot = (routing.experts == e).nonzero(as_tuple=True)
            if len(node):
                out.index_add_(0, node, routing.gates[node, slot, None] * expert(x[node]))
        return out, routing

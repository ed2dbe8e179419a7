"""MoE load-balancing losses and capacity dropping.

The thesis names balancing losses and batch-prioritized routing (Sec. 2.0.3) without giving their
equations, so these are the standard published forms (each docstring says which paper). All take
flattened router tensors of shape (n_tok, n_experts).
"""

from __future__ import annotations

import torch
from torch import Tensor


def importance_cv2(gates: Tensor, weight: float = 1.0) -> Tensor:
    """w_imp · CV(Σ_x G(x))² where Importance_i = Σ_tokens gate_i (external: Shazeer et al. 2017 [531]).

    `gates` are the (possibly sparse) combine weights. Zero iff every expert gets the same total
    gate mass, i.e. minimal for a uniform router.
    """
    importance = gates.sum(0)
    return weight * importance.var(unbiased=False) / importance.mean().pow(2).clamp_min(1e-12)


def switch_aux(probs: Tensor, dispatch: Tensor | None = None, alpha: float = 1e-2) -> Tensor:
    """α · n · Σ_i f_i P_i (external: Fedus et al. 2021, Switch Transformer).

    f_i = fraction of routing assignments sent to expert i (from `dispatch`, default the top-1 of
    `probs`), P_i = mean router probability of expert i. Equals α for a uniform router and grows as
    routing concentrates on few experts.
    """
    n = probs.shape[-1]
    if dispatch is None:
        dispatch = torch.zeros_like(probs, dtype=torch.bool).scatter(-1, probs.argmax(-1, keepdim=True), True)
    counts = dispatch.float().sum(0)
    f = counts / counts.sum().clamp_min(1.0)
    return alpha * n * (f * probs.mean(0)).sum()


def router_z_loss(logits: Tensor) -> Tensor:
    """mean over tokens of logsumexp(router logits)² (external: Zoph et al. 2022, ST-MoE).

    Keeps router logits small, which stabilises training.
    """
    return torch.logsumexp(logits, dim=-1).pow(2).mean()


def bpr_keep(dispatch: Tensor, combine: Tensor, capacity: int) -> Tensor:
    """Batch-prioritized routing: which (token, expert) assignments fit in each expert's buffer.

    External: Riquelme et al. 2021, V-MoE [501]. Buffers are filled first with every token's top-1
    choice, then top-2 choices, and so on; within one round tokens are served in order of decreasing
    max routing weight. An expert accepts at most `capacity` tokens; the rest are dropped (the caller
    lets them pass through the residual). Returns the kept subset of `dispatch` (bool, same shape).
    """
    n_tok = dispatch.shape[0]
    weights = combine.masked_fill(~dispatch, float("-inf"))
    rank = (weights.unsqueeze(-1) < weights.unsqueeze(-2)).sum(-1)  # choice rank within the token
    priority = torch.empty(n_tok, dtype=torch.long, device=dispatch.device)
    priority[combine.max(-1).values.argsort(descending=True, stable=True)] = torch.arange(n_tok, device=dispatch.device)
    tok, exp = dispatch.nonzero(as_tuple=True)
    order = (rank[tok, exp] * n_tok + priority[tok]).argsort()
    tok, exp = tok[order], exp[order]
    seen = torch.nn.functional.one_hot(exp, dispatch.shape[1]).cumsum(0)
    position = seen.gather(1, exp.unsqueeze(1)).squeeze(1)  # 1-based slot in the expert's buffer
    keep = torch.zeros_like(dispatch)
    keep[tok[position <= capacity], exp[position <= capacity]] = True
    return keep

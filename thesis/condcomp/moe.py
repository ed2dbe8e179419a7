"""Mixture-of-experts layer f(x) = Σ_i γ_i(x) f_i(x, w_i) (eq. 2.18) and its token routers.

A router turns router logits (n_tok, n) into a boolean `dispatch` (token t runs expert e) and
`combine` weights γ (zero where not dispatched). Experts run only on their dispatched tokens, so
the executed (token, expert) pairs are exactly what a FLOPs accountant must price.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from thesis.condcomp.balancing import bpr_keep
from thesis.condcomp.gumbel import topk_mask
from thesis.condcomp.record import ComputeRecord

RouterName = Literal["topk", "noisy_topk", "expert_choice", "random", "hash"]


@dataclass
class Routing:
    """Routing decisions of one MoE call, over the flattened tokens (n_tok = prod(token_shape)).

    dispatch: (n_tok, n) bool, token t processed by expert e; combine: (n_tok, n) weights γ;
    logits: (n_tok, n) router logits, None for parameter-free routers (random, hash).
    """

    dispatch: Tensor
    combine: Tensor
    logits: Tensor | None
    token_shape: tuple[int, ...]

    @property
    def probs(self) -> Tensor | None:
        """Router probabilities softmax(logits), the input of the balancing losses."""
        return None if self.logits is None else self.logits.softmax(-1)

    @property
    def load(self) -> Tensor:
        """Tokens processed by each expert, shape (n,): the expert-load histogram."""
        return self.dispatch.sum(0)

    @property
    def experts_per_token(self) -> Tensor:
        """Number of experts run on each token, shaped like the input tokens (a compute map)."""
        return self.dispatch.sum(-1).reshape(self.token_shape)

    @property
    def record(self) -> ComputeRecord:
        """Per-token executed fraction of the dense (all-experts) cost."""
        n = self.dispatch.shape[-1]
        return ComputeRecord(fraction=self.experts_per_token.float() / n, unit="token")


def route_topk(logits: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Token choice: each token goes to its k most probable experts, γ = softmax prob (Shazeer [531])."""
    probs = logits.softmax(-1)
    dispatch = topk_mask(probs, k)
    return dispatch, probs * dispatch


def route_noisy_topk(logits: Tensor, noise_logits: Tensor, k: int, noisy: bool) -> tuple[Tensor, Tensor, Tensor]:
    """Noisy top-k gating (external: Shazeer et al. 2017): H = xW_g + ε·softplus(xW_noise), ε ~ N(0, 1),
    G = softmax(KeepTopK(H, k)). Noise only when `noisy`. Returns (dispatch, combine, H)."""
    h = logits + torch.randn_like(logits) * F.softplus(noise_logits) if noisy else logits
    dispatch = topk_mask(h, k)
    return dispatch, h.masked_fill(~dispatch, float("-inf")).softmax(-1), h


def expert_capacity(n_tok: int, n_experts: int, capacity_factor: float) -> int:
    """Expert-choice capacity k = n_tok · c / n (external: Zhou et al. 2022 [689]), in [1, n_tok]."""
    return min(n_tok, max(1, round(n_tok * capacity_factor / n_experts)))


def route_expert_choice(logits: Tensor, capacity: int) -> tuple[Tensor, Tensor]:
    """Expert choice [689]: S = softmax(logits) over experts; each expert takes its `capacity`
    highest-scoring tokens (top-k of S^T), γ = S at the chosen pairs. Balanced by construction."""
    probs = logits.softmax(-1)
    dispatch = topk_mask(probs.T, capacity).T
    return dispatch, probs * dispatch


def route_random(n_tok: int, n_experts: int, k: int, device: torch.device,
                 generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Random routing (external: Zuo et al. 2022 [702]): k distinct uniform experts per token, γ = 1/k."""
    dispatch = topk_mask(torch.rand(n_tok, n_experts, device=device, generator=generator), k)
    return dispatch, dispatch.float() / k


def hash_experts(token_ids: Tensor, n_experts: int) -> Tensor:
    """Fixed multiplicative hash of token ids to experts (external: Roller et al. 2021, hash layers)."""
    return (token_ids.long() * 2654435761) % (2**32) % n_experts


class MoE(nn.Module):
    """MoE layer (eq. 2.18) over the tokens of x (..., dim), with a choice of router.

    Learned routers score a token by its dot products with n trainable expert embeddings. `router`:
    "topk" (token choice, k experts per token), "noisy_topk" (Shazeer 2017), "expert_choice"
    (capacity n_tok·capacity_factor/n tokens per expert, tokens = all tokens of the call), "random"
    (k uniform experts per token), "hash" (k = 1; hashes `token_ids` when given, otherwise the argmax
    of a fixed random projection of the token). With `drop_overflow`, token-choice routers keep at
    most ceil(capacity_factor·k·n_tok/n) tokens per expert by batch-prioritized routing (V-MoE).
    forward returns (output shaped x.shape[:-1] + expert output dim, Routing); dropped tokens get 0.
    With k = n (or expert choice with capacity_factor = n) it is the dense Σ softmax_i f_i(x).
    """

    def __init__(self, experts: Sequence[nn.Module], dim: int, router: RouterName = "topk", k: int = 1,
                 capacity_factor: float = 1.0, drop_overflow: bool = False):
        super().__init__()
        n = len(experts)
        if router not in ("topk", "noisy_topk", "expert_choice", "random", "hash"):
            raise ValueError(f"unknown router {router!r}")
        if not 1 <= k <= n or (router == "hash" and k != 1):
            raise ValueError("need 1 <= k <= n experts (k = 1 for hash routing)")
        self.experts = nn.ModuleList(experts)
        self.router_name = router
        self.k = k
        self.capacity_factor = capacity_factor
        self.drop_overflow = drop_overflow
        learned = router in ("topk", "noisy_topk", "expert_choice")
        self.expert_embeddings = nn.Linear(dim, n, bias=False) if learned else None
        if router == "noisy_topk":
            self.noise = nn.Linear(dim, n, bias=False)
            nn.init.zeros_(self.noise.weight)
        if router == "hash":
            self.register_buffer("projection", torch.randn(dim, n, generator=torch.Generator().manual_seed(0)))

    def route(self, tokens: Tensor, token_ids: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor | None]:
        """(dispatch, combine, logits) for flattened tokens (n_tok, dim)."""
        n_tok, n = tokens.shape[0], len(self.experts)
        name = self.router_name
        if name == "random":
            return (*route_random(n_tok, n, self.k, tokens.device), None)
        if name == "hash":
            expert = hash_experts(token_ids.reshape(-1), n) if token_ids is not None else (tokens @ self.projection).argmax(-1)
            dispatch = F.one_hot(expert, n).bool()
            return dispatch, dispatch.to(tokens.dtype), None
        logits = self.expert_embeddings(tokens)
        if name == "expert_choice":
            return (*route_expert_choice(logits, expert_capacity(n_tok, n, self.capacity_factor)), logits)
        if name == "noisy_topk":
            dispatch, combine, logits = route_noisy_topk(logits, self.noise(tokens), self.k, self.training)
        else:
            dispatch, combine = route_topk(logits, self.k)
        if self.drop_overflow:
            capacity = math.ceil(self.capacity_factor * self.k * n_tok / n)
            dispatch = bpr_keep(dispatch, combine, capacity)
            combine = combine * dispatch
        return dispatch, combine, logits

    def forward(self, x: Tensor, token_ids: Tensor | None = None) -> tuple[Tensor, Routing]:
        tokens = x.reshape(-1, x.shape[-1])
        dispatch, combine, logits = self.route(tokens, token_ids)
        out: Tensor | None = None
        for e, expert in enumerate(self.experts):
            idx = dispatch[:, e].nonzero(as_tuple=True)[0]
            if idx.numel() == 0:
                continue
            y = combine[idx, e].unsqueeze(-1) * expert(tokens[idx])
            out = y.new_zeros(tokens.shape[0], y.shape[-1]) if out is None else out
            out = out.index_add(0, idx, y)
        out = torch.zeros_like(tokens) if out is None else out
        routing = Routing(dispatch=dispatch, combine=combine, logits=logits, token_shape=tuple(x.shape[:-1]))
        return out.reshape(*x.shape[:-1], out.shape[-1]), routing

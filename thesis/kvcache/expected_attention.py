"""Expected Attention (thesis Sec. 4.3, spec C.1, C.2): score each cached pair by the attention that
future queries are expected to pay it, times its value norm.

Future queries are modelled as Gaussian (eq. 4.12) with RoPE averaged over the next T positions,
R_bar = (1/T) sum_{j=1..T} R_{t+j} (eq. 4.13), where t + 1 is the *absolute* position of the next
token (taken from the layer's `position_ids`, so it stays right after earlier evictions; spec
E.14-E.15). The expected unnormalised score of key k_i is the Gaussian moment generating function
(eq. 4.14), normalised over keys (eq. 4.15), and the pair's importance is (a_i + eps) times a value
norm (eq. 4.16). The first `n_sink` positions are never evicted and are left out of the statistics.

RoPE as a matrix: R_p x = cos_p * x + sin_p * rotate_half(x), so R_bar = diag(mean cos) +
diag(mean sin) P with P the rotate-half matrix; mean -> R_bar mu, covariance -> R_bar S R_bar^T.

Where the thesis and kvpress differ (spec E), the default follows the thesis and a field selects
kvpress's variant:
- `statistics`: "hidden" (thesis eq. 4.12: moments mu, S of the layer's input hidden states, then
  mu_q = W_Q mu, S_q = W_Q S W_Q^T, without the q_proj bias the equation does not have) or
  "queries" (kvpress: empirical moments of the pre-RoPE queries, q_norm included). Both use 1/N.
  They coincide for a bias-free q_proj without q_norm; "hidden" refuses models with q_norm.
- `epsilon`: 0.02 (thesis; it uses 0 for needle-in-a-haystack); kvpress default 0.0, its
  evaluation registry 0.01 (with AdaKV).
- `value_norm`: "v" (||v_i||, what the thesis experiments and kvpress use) or "wo_v" (||W_o v_i||,
  eq. 4.16 as written; per query head with that head's W_o columns).
- `sinks_in_softmax`: True (eq. 4.15 normalises over every cached key, the sinks included) or False
  (kvpress: the softmax runs over the non-sink keys only).
- `rope_start`: "absolute" (t + 1 from `position_ids`, spec E.14) or "buffer_length" (kvpress: the
  length of the hidden states being compressed, which inside a decoding press is the buffer).
- Thesis silent, kvpress behaviour kept: n_sink = 4; scores per query head (keys repeated over the
  GQA group), softmax per query head, then mean over the group (with "wo_v": the product is formed
  per query head before the mean).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn

from thesis.kvcache.press import Press, decoder
from thesis.kvcache.queries import group_mean, pre_rope_queries, rotate_half


def averaged_rotation(rotary: nn.Module, next_position: int, n_future: int, head_dim: int,
                      device: torch.device) -> Tensor:
    """R_bar (head_dim, head_dim) averaged over positions next_position .. next_position + T - 1 (eq. 4.13)."""
    positions = torch.arange(next_position, next_position + n_future, device=device)[None]
    cos, sin = rotary(torch.zeros(1, dtype=torch.float32, device=device), positions)
    identity = torch.eye(head_dim, device=device)
    half_turn = rotate_half(identity).T  # columns: P e_j, so half_turn @ x = rotate_half(x)
    return torch.diag(cos[0].float().mean(0)) + torch.diag(sin[0].float().mean(0)) @ half_turn


def moments(x: Tensor) -> tuple[Tensor, Tensor]:
    """Mean (..., d) and covariance (..., d, d) with 1/N over the second-to-last dimension of x (..., N, d)."""
    mean = x.mean(dim=-2)
    centred = x - mean.unsqueeze(-2)
    return mean, centred.transpose(-1, -2) @ centred / x.shape[-2]


@dataclass
class ExpectedAttentionPress(Press):
    """Evict the pairs with the smallest expected contribution (eq. 4.16)."""

    n_future_positions: int = 512
    n_sink: int = 4
    epsilon: float = 0.02
    use_covariance: bool = True
    statistics: Literal["hidden", "queries"] = "hidden"
    value_norm: Literal["v", "wo_v"] = "v"
    sinks_in_softmax: bool = True
    rope_start: Literal["absolute", "buffer_length"] = "absolute"
    rotary: nn.Module | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.statistics not in ("hidden", "queries"):
            raise ValueError(f"statistics must be 'hidden' (thesis) or 'queries' (kvpress); got {self.statistics!r}.")
        if self.value_norm not in ("v", "wo_v"):
            raise ValueError(f"value_norm must be 'v' or 'wo_v'; got {self.value_norm!r}.")
        if self.rope_start not in ("absolute", "buffer_length"):
            raise ValueError(f"rope_start must be 'absolute' (thesis) or 'buffer_length' (kvpress); "
                             f"got {self.rope_start!r}.")

    def attach(self, model: nn.Module) -> None:
        self.rotary = decoder(model).rotary_emb

    def query_moments(self, module: nn.Module, hidden_states: Tensor) -> tuple[Tensor, Tensor]:
        """Pre-RoPE query mean (batch, heads, d) and covariance (batch, heads, d, d) (eq. 4.12)."""
        if self.statistics == "queries":
            return moments(pre_rope_queries(module, hidden_states).float())
        if hasattr(module, "q_norm"):
            raise ValueError("statistics='hidden' needs a linear query map; this model applies q_norm. "
                             "Use statistics='queries'.")
        weight = module.q_proj.weight.float().view(-1, module.head_dim, hidden_states.shape[-1])
        mean, covariance = moments(hidden_states.float())
        return (torch.einsum("hdD,bD->bhd", weight, mean),
                torch.einsum("hdD,bDE,heE->bhde", weight, covariance, weight))

    def score(self, module: nn.Module, hidden_states: Tensor, keys: Tensor, values: Tensor,
              attentions: Tensor | None, kwargs: dict[str, Any]) -> Tensor:
        n, d = keys.shape[-2:]
        if n <= self.n_sink:
            raise ValueError(f"Expected Attention needs more than n_sink={self.n_sink} cached pairs; got {n}.")
        mean, covariance = self.query_moments(module, hidden_states[:, self.n_sink:])
        next_position = (hidden_states.shape[1] if self.rope_start == "buffer_length"
                         else int(kwargs["position_ids"][0, -1]) + 1)
        rotation = averaged_rotation(self.rotary, next_position, self.n_future_positions, d, keys.device)
        mean = mean @ rotation.T
        k = keys.float().repeat_interleave(module.num_key_value_groups, dim=1)
        logits = (k @ mean.unsqueeze(-1)).squeeze(-1) / math.sqrt(d)
        if self.use_covariance:
            covariance = rotation @ covariance @ rotation.T
            logits = logits + torch.einsum("bhnd,bhde,bhne->bhn", k, covariance, k) / (2 * d)
        if not self.sinks_in_softmax:
            logits[..., : self.n_sink] = float("-inf")
        expected = logits.softmax(dim=-1)
        if self.value_norm == "v":
            scores = (group_mean(expected, module.num_key_value_groups) + self.epsilon) * values.float().norm(dim=-1)
        else:
            scores = group_mean((expected + self.epsilon) * self.output_value_norms(module, values),
                                module.num_key_value_groups)
        scores[..., : self.n_sink] = scores[..., self.n_sink:].max() + 1
        return scores

    @staticmethod
    def output_value_norms(module: nn.Module, values: Tensor) -> Tensor:
        """||W_o^h v_i|| (batch, heads, seq) for every query head h (its columns of o_proj)."""
        weight = module.o_proj.weight.float().view(-1, module.config.num_attention_heads, module.head_dim)
        v = values.float().repeat_interleave(module.num_key_value_groups, dim=1)
        return torch.einsum("Dhd,bhnd->bhnD", weight, v).norm(dim=-1)

"""Sparse autoencoders of thesis Eq. 5.1, in the three published parameterisations SpARE uses.

One module covers them: encoder `W_enc` (d, n) and `b_enc` (n), decoder `W_dec` (n, d) and `b_dec`
(d), and an activation: `relu` (L1-trained SAEs), `topk` (EleutherAI / the authors' Llama2 SAEs:
ReLU, then keep the k largest) or `jumprelu` (GemmaScope: z_i = pre_i * [pre_i > threshold_i]).
Eq. 5.1 subtracts the decoder bias from the input before encoding; GemmaScope does not
(`subtract_decoder_bias=False`). SpARE reads one of three codes (spec A.2, `sae.code`):
`pre_topk_relu` (the dense ReLU pre-activations before TopK, what the authors' code uses),
`topk` (the sparse code) and `jumprelu`.
"""

from __future__ import annotations

import torch
from torch import nn

ACTIVATIONS = ("relu", "topk", "jumprelu")
CODES = ("pre_topk_relu", "topk", "jumprelu", "relu")


class SparseAutoencoder(nn.Module):
    def __init__(self, d: int, n: int, activation: str = "topk", k: int | None = None,
                 subtract_decoder_bias: bool = True) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation {activation!r} is not one of {ACTIVATIONS}")
        if activation == "topk" and not k:
            raise ValueError("a TopK SAE needs k")
        self.d, self.n, self.activation, self.k = d, n, activation, k
        self.subtract_decoder_bias = subtract_decoder_bias
        self.W_enc = nn.Parameter(torch.zeros(d, n))
        self.b_enc = nn.Parameter(torch.zeros(n))
        self.W_dec = nn.Parameter(torch.zeros(n, d))
        self.b_dec = nn.Parameter(torch.zeros(d))
        self.register_buffer("threshold", torch.zeros(n))

    def pre_activations(self, h: torch.Tensor) -> torch.Tensor:
        """W_enc^T (h - b) + b_enc (Eq. 5.1 before sigma); GemmaScope leaves out the -b."""
        x = h - self.b_dec if self.subtract_decoder_bias else h
        return x.to(self.W_enc.dtype) @ self.W_enc + self.b_enc

    def encode(self, h: torch.Tensor) -> torch.Tensor:
        """The SAE's own sparse code z = f_theta(h)."""
        pre = self.pre_activations(h)
        if self.activation == "jumprelu":
            return pre * (pre > self.threshold)
        acts = torch.relu(pre)
        if self.activation == "relu":
            return acts
        values, indices = acts.topk(self.k, dim=-1)
        return torch.zeros_like(acts).scatter_(-1, indices, values)

    def code(self, h: torch.Tensor, kind: str) -> torch.Tensor:
        """The code SpARE reads (`sae.code`): `pre_topk_relu` = ReLU pre-activations before TopK."""
        if kind not in CODES:
            raise ValueError(f"sae.code={kind!r} is not one of {CODES}")
        if kind == "pre_topk_relu" or kind == "relu":
            return torch.relu(self.pre_activations(h))
        if kind == "jumprelu" and self.activation != "jumprelu":
            raise ValueError("sae.code=jumprelu needs a JumpReLU SAE (GemmaScope)")
        return self.encode(h)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """g_phi(z) = W_dec^T z + b (the bias is added, as spec A.2 reads Eq. 5.1)."""
        return self.decode_directions(z) + self.b_dec

    def decode_directions(self, z: torch.Tensor) -> torch.Tensor:
        """sum_i z_i f_i without the bias: what Eq. 5.4 adds, since the two biases cancel there."""
        return z.to(self.W_dec.dtype) @ self.W_dec

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(h))

    @torch.no_grad()
    def fvu(self, h: torch.Tensor) -> float:
        """Fraction of variance unexplained: ||h - h_hat||^2 / ||h - mean(h)||^2 over the batch."""
        h = h.to(self.W_enc.dtype)
        residual = (h - self(h)).pow(2).sum()
        total = (h - h.mean(0)).pow(2).sum().clamp_min(1e-12)
        return float(residual / total)

"""The token-based DJSCC ViT of Sec. 3.3 (eqs. 3.25-3.28, Figs. 3.23-3.25), around a timm ViT.

Edge device: E = C_E o (S^s o B^s o ... o S^2 o B^2 o B^1) o E-embed; server:
D = C o B^L o ... o B^{s+1} o C_D. Token selection (Alg. 1) runs before blocks 2..s
(M^1 = 1); the mask M^s decides which tokens are transmitted: the kept patch tokens, the class
token and the budget token. Without selection (`adaptive=False`) this is the static "ViT AE"
baseline: every patch token and the class token are sent. Without a link the model is the
plain (adaptive) ViT, the backbone that the DJSCC fine-tuning starts from.

Training uses soft masks, `x = block(x * M) * M`. Evaluation (`hard=True`) keeps the tokens with
M > delta and hides the others from attention (an additive -inf key mask), which computes
exactly what physically removing them would (LayerNorm and MLP act per token); the test suite
checks that equality against a batch-1 forward on the gathered tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from thesis.core.errors import ConfigError
from thesis.semcom.channel import Link
from thesis.semcom.selector import BudgetToken, TokenSelector


@dataclass
class Trace:
    """What one forward did: soft masks of the adaptive blocks 2..s, (B, n) each; the transmitted
    keep flags (B, N) over [CLS, patches, (budget)]; tokens entering each block (B, L); the sent
    complex packet (B, N, o_r), zero where nothing was sent (None without a link)."""

    masks: list[Tensor]
    keep: Tensor
    block_tokens: Tensor
    packet: Tensor | None = None
    extra_tokens: int = 2
    margins: list[Tensor] | None = None

    @property
    def kept_patches(self) -> Tensor:
        """n_alpha per sample: patch tokens transmitted after block s."""
        return self.keep.sum(-1) - self.extra_tokens

    @property
    def transmitted_tokens(self) -> Tensor:
        """Tokens sent per sample: kept patches + class token (+ budget token)."""
        return self.keep.sum(-1)


def key_mask(keep: Tensor) -> Tensor:
    """Additive attention mask (B, 1, 1, N): 0 for kept keys, -inf for dropped ones."""
    bias = torch.zeros(keep.shape, dtype=torch.float32, device=keep.device)
    return bias.masked_fill(keep <= 0, float("-inf"))[:, None, None, :]


def compact(x: Tensor, keep: Tensor) -> tuple[Tensor, Tensor]:
    """Move the kept tokens to the front (order preserved) and cut the sequence to the largest kept
    count in the batch: the server then computes only on what was sent (plus padding, still masked)."""
    order = torch.sort(keep, dim=1, descending=True, stable=True).indices
    width = int(keep.sum(-1).max())
    order = order[:, :width]
    return torch.gather(x, 1, order.unsqueeze(-1).expand(-1, -1, x.shape[-1])), torch.gather(keep, 1, order)


class SemanticViT(nn.Module):
    """A timm VisionTransformer split after block `split`, with optional selection and link."""

    def __init__(self, vit: nn.Module, split: int = 3, adaptive: bool = True, init_gate_bias: float = 10.0,
                 init_thr_bias: float = -10.0, delta: float = 0.0, scale_kept: bool = True):
        super().__init__()
        if getattr(vit, "global_pool", "token") != "token" or getattr(vit, "num_prefix_tokens", 1) != 1:
            raise ConfigError("the semcom ViT needs a class-token timm ViT (global_pool='token', one prefix "
                              "token): choose a ViT/DeiT without register tokens")
        if not 1 <= split < len(vit.blocks):
            raise ConfigError(f"djscc split s={split} must lie in [1, {len(vit.blocks) - 1}] for a "
                              f"{len(vit.blocks)}-block ViT")
        self.vit = vit
        self.split = split
        self.adaptive = adaptive
        self.delta = delta
        self.scale_kept = scale_kept
        dim = vit.embed_dim
        self.budget = BudgetToken(dim) if adaptive else None
        self.selectors = nn.ModuleList(TokenSelector(dim, init_gate_bias, init_thr_bias)
                                       for _ in range(split - 1)) if adaptive else nn.ModuleList()
        self.link: Link | None = None

    @property
    def dim(self) -> int:
        return self.vit.embed_dim

    @property
    def num_patches(self) -> int:
        return self.vit.patch_embed.num_patches

    def attach_link(self, link: Link) -> None:
        self.link = link

    def embed(self, images: Tensor, alpha: Tensor | None) -> Tensor:
        x = self.vit.norm_pre(self.vit._pos_embed(self.vit.patch_embed(images)))
        if self.budget is not None:
            x = torch.cat([x, self.budget(alpha)], dim=1)
        return x

    def _full_mask(self, patch_mask: Tensor) -> Tensor:
        ones = patch_mask.new_ones(patch_mask.shape[0], 1)
        parts = [ones, patch_mask] + ([ones] if self.budget is not None else [])
        return torch.cat(parts, dim=1)

    def encode(self, images: Tensor, alpha: Tensor | float | None = None,
               hard: bool | None = None) -> tuple[Tensor, Tensor, list[Tensor], list[Tensor], list[Tensor]]:
        """Edge device up to block s: tokens (B, N, d), keep flags (B, N), soft masks of blocks
        2..s, tokens entering each block, pre-ReLU margins of blocks 2..s. `hard` defaults to
        `not self.training`."""
        batch = images.shape[0]
        hard = (not self.training) if hard is None else hard
        alpha_t = self._per_sample(alpha if alpha is not None else 1.0, batch, images)
        x = self.embed(images, alpha_t)
        n = self.num_patches
        patch_mask = x.new_ones(batch, n)
        masks: list[Tensor] = []
        margins: list[Tensor] = []
        counts: list[Tensor] = []
        for l, block in enumerate(self.vit.blocks[: self.split]):
            if l >= 1 and self.adaptive:
                patch_mask, margin = self.selectors[l - 1](x[:, 1:n + 1], x[:, -1], patch_mask)
                masks.append(patch_mask)
                margins.append(margin)
            full = self._full_mask(patch_mask)
            keep = (full > self.delta).to(x.dtype)
            counts.append(keep.sum(-1))
            scale = (full * keep if self.scale_kept else keep) if hard else full
            attn = key_mask(keep) if hard else None
            x = block(x * scale.unsqueeze(-1), attn_mask=attn) * scale.unsqueeze(-1)
        keep = (self._full_mask(patch_mask) > self.delta).to(x.dtype) if hard else torch.ones_like(x[..., 0])
        return x, keep, masks, counts, margins

    def decode(self, x: Tensor, keep: Tensor, ratio: float | None = None, snr_db: Tensor | float | None = None,
               hard: bool | None = None) -> tuple[Tensor, Tensor | None, list[Tensor]]:
        """Link (if `ratio`) and server blocks s+1..L: logits, sent packet, tokens per block."""
        hard = (not self.training) if hard is None else hard
        packet = None
        if ratio is not None:
            if self.link is None:
                raise ConfigError("a compression ratio was given but the model has no link: attach one first")
            snr = None if snr_db is None else self._per_sample(snr_db, x.shape[0], x)
            x, packet = self.link(x, keep, ratio, snr)
            x = x * keep.unsqueeze(-1)
        attn = key_mask(keep) if hard else None
        counts = []
        for block in self.vit.blocks[self.split:]:
            counts.append(keep.sum(-1))
            x = block(x, attn_mask=attn)
        return self.vit.forward_head(self.vit.norm(x)), packet, counts

    def forward(self, images: Tensor, alpha: Tensor | float | None = None, ratio: float | None = None,
                snr_db: Tensor | float | None = None, hard: bool | None = None) -> tuple[Tensor, Trace]:
        """Logits and the forward's `Trace`. `alpha`: budget per sample (or one float); `ratio`: which
        codec sends the tokens (None: no link, the plain split ViT); `snr_db`: channel SNR per
        sample (None: noiseless). `hard` defaults to `not self.training`."""
        x, keep, masks, counts, margins = self.encode(images, alpha, hard)
        logits, packet, later = self.decode(x, keep, ratio, snr_db, hard)
        trace = Trace(masks, keep, torch.stack(counts + later, dim=1), packet, 2 if self.budget is not None else 1,
                      margins)
        return logits, trace

    @staticmethod
    def _per_sample(value: Tensor | float, batch: int, like: Tensor) -> Tensor:
        if isinstance(value, Tensor):
            return value.to(like.device, torch.float32).expand(batch) if value.dim() == 0 else value.to(like.device)
        return torch.full((batch,), float(value), device=like.device)

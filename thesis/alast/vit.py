"""A timm VisionTransformer run block by block under a step plan: which blocks train, which tokens go on.

ALaST changes two things in a fine-tuning step (thesis Sec. 3.2.3): the set of trainable blocks
and the number of tokens each block lets through. This module is where a timm ViT (ViT-B, DeiT-S,
DeiT-T, or a tiny twin; with or without LoRA adapters inside) is run that way:

- the patch embedding and the blocks below the lowest trainable one run without autograd (no
  stored activations, no backward), the blocks above it back-propagate input gradients;
- inside block l, after multi-head attention, only the prefix (class) tokens and the k_l patch
  tokens that receive most attention from the class token (mean over heads, EViT placement) go on
  to the MLP and the next blocks; the others are discarded, never to return;
- the class-token update of every block, Delta_l = ||CLS_l - CLS_{l-1}||^2 (eq. 3.17), averaged
  over the batch, is recorded for the budget update;
- for the ToMe baseline, a block merges r tokens instead, at the same place (`thesis.alast.tome`),
  and the token sizes travel with the sequence for proportional attention.

Attention is computed explicitly (softmax(q k^T) v), because its class-token row ranks the tokens
and because the FLOP counter then sees the backward products too. Without a plan,
`forward(images)` runs the full model on every token.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from thesis.alast.budget import kept_tokens
from thesis.alast.tome import TokenSizes, merge, merge_count, proportional_attention

DROP_PLACES = ("after_attn", "after_block")


@dataclass(frozen=True)
class StepPlan:
    """One step's schedule: per block, whether it trains, the fraction of tokens it keeps and the
    number of tokens it merges (ToMe; empty `merge`: none), and whether attention is proportional
    to the merged tokens' sizes. A block may drop or merge tokens, not both."""

    trainable: tuple[bool, ...]
    keep: tuple[float, ...]
    train_stem: bool = False
    merge: tuple[int, ...] = ()
    proportional_attention: bool = True

    def __post_init__(self) -> None:
        if len(self.trainable) != len(self.keep):
            raise ValueError(f"plan has {len(self.trainable)} trainable flags but {len(self.keep)} keep fractions")
        if self.merge and len(self.merge) != len(self.keep):
            raise ValueError(f"plan has {len(self.merge)} merge counts for {len(self.keep)} blocks")
        both = [l for l, (r, k) in enumerate(zip(self.merge, self.keep)) if r > 0 and k < 1.0]
        if both:
            raise ValueError(f"blocks {both} both merge and drop tokens; give each block one of the two")

    @classmethod
    def full(cls, num_layers: int, train_stem: bool = True) -> StepPlan:
        return cls((True,) * num_layers, (1.0,) * num_layers, train_stem)

    def merge_at(self, layer: int) -> int:
        """Tokens block `layer` merges (before capping to what the sequence allows)."""
        return self.merge[layer] if self.merge else 0

    @property
    def first_trainable(self) -> int:
        """Index of the lowest trainable block (the number of blocks when none trains)."""
        return next((i for i, t in enumerate(self.trainable) if t), len(self.trainable))


@dataclass
class ForwardRecord:
    """What one forward pass did, per block: tokens in and out, tokens merged (ToMe), whether the
    tokens entering carried sizes (after a merge), input-grad flag, class-token delta."""

    tokens_in: list[int] = field(default_factory=list)
    tokens_out: list[int] = field(default_factory=list)
    merged: list[int] = field(default_factory=list)
    sized: list[bool] = field(default_factory=list)
    input_grad: list[bool] = field(default_factory=list)
    deltas: list[Tensor] = field(default_factory=list)
    head_input_grad: bool = False

    @property
    def delta(self) -> Tensor:
        """Delta_l of eq. 3.17 for every block (L,), batch mean, detached."""
        return torch.stack(self.deltas)


def project_qkv(attn: nn.Module, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Queries, keys and values (B, heads, N, head_dim) of a timm `Attention` on x."""
    B, N, _ = x.shape
    qkv = attn.qkv(x).reshape(B, N, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    return attn.q_norm(q), attn.k_norm(k), v


def attention_weights(attn: nn.Module, x: Tensor, size: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """The softmax attention matrices (B, heads, N, N) of a timm `Attention` on x, and its values;
    with token sizes (B, N, 1), ToMe's proportional attention."""
    q, k, v = project_qkv(attn, x)
    return proportional_attention(q, k, attn.scale, size), v


def attend(attn: nn.Module, x: Tensor, num_prefix: int, size: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """timm `Attention` computed explicitly; returns its output, the class token's attention
    over the patch tokens, averaged over heads (B, N - num_prefix), and the keys (ToMe's features)."""
    q, k, v = project_qkv(attn, x)
    weights = proportional_attention(q, k, attn.scale, size)
    cls_attention = weights[:, :, 0, num_prefix:].mean(dim=1).detach()
    out = (attn.attn_drop(weights) @ v).transpose(1, 2).reshape(x.shape[0], x.shape[1], -1)
    out = attn.norm(out)
    if getattr(attn, "gate", None) is not None:
        out = out * attn.gate(x).sigmoid()
    return attn.proj_drop(attn.proj(out)), cls_attention, k


def keep_sized_tokens(x: Tensor, sizes: TokenSizes | None, scores: Tensor, k: int, num_prefix: int) -> Tensor:
    """`keep_top_tokens`, with the sizes of merged tokens (if any) kept alongside their tokens."""
    if sizes is None or sizes.size is None:
        return keep_top_tokens(x, scores, k, num_prefix)
    kept = keep_top_tokens(torch.cat([x, sizes.size.to(x.dtype)], dim=-1), scores, k, num_prefix)
    sizes.size = kept[..., -1:]
    return kept[..., :-1]


def keep_top_tokens(x: Tensor, scores: Tensor, k: int, num_prefix: int) -> Tensor:
    """The prefix tokens and the k best-scoring patch tokens (in their original order)."""
    if k >= x.shape[1] - num_prefix:
        return x
    idx = scores.topk(k, dim=-1).indices.sort(dim=-1).values + num_prefix
    patches = torch.gather(x, 1, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
    return torch.cat([x[:, :num_prefix], patches], dim=1)


def run_block(block: nn.Module, x: Tensor, keep: int, num_prefix: int, drop_at: str = "after_attn",
              sizes: TokenSizes | None = None, merge_r: int = 0) -> Tensor:
    """One timm `Block` keeping `keep` patch tokens, dropped after attention or after the MLP.

    ToMe: with `merge_r` > 0 the block merges that many tokens between attention and MLP;
    `sizes` (updated in place) holds the token sizes for proportional attention and merging."""
    y, scores, keys = attend(block.attn, block.norm1(x), num_prefix, sizes.attention_size if sizes else None)
    x = x + block.drop_path1(block.ls1(y))
    if merge_r > 0:
        x = merge(x, keys, sizes if sizes is not None else TokenSizes(), merge_r, num_prefix)
    if drop_at == "after_attn":
        x = keep_sized_tokens(x, sizes, scores, keep, num_prefix)
    x = x + block.drop_path2(block.ls2(block.mlp(block.norm2(x))))
    if drop_at == "after_block":
        x = keep_sized_tokens(x, sizes, scores, keep, num_prefix)
    return x


class SelectiveViT(nn.Module):
    """A timm VisionTransformer whose forward follows a `StepPlan` and fills a `ForwardRecord`."""

    def __init__(self, vit: nn.Module, drop_at: str = "after_attn", keep_reference: str = "current"):
        super().__init__()
        if drop_at not in DROP_PLACES:
            raise ValueError(f"drop_at must be one of {DROP_PLACES}, got {drop_at!r}")
        if not hasattr(vit, "blocks") or not hasattr(vit, "patch_embed"):
            raise TypeError(f"{type(vit).__name__} is not a timm VisionTransformer (no blocks / patch_embed)")
        self.vit = vit
        self.drop_at = drop_at
        self.keep_reference = keep_reference

    @property
    def num_layers(self) -> int:
        return len(self.vit.blocks)

    def embed(self, images: Tensor) -> Tensor:
        vit = self.vit
        return vit.norm_pre(vit.patch_drop(vit._pos_embed(vit.patch_embed(images))))

    def classify(self, x: Tensor) -> Tensor:
        return self.vit.forward_head(self.vit.norm(x))

    def forward(self, images: Tensor, plan: StepPlan | None = None,
                record: ForwardRecord | None = None) -> Tensor:
        plan = plan or StepPlan.full(self.num_layers)
        record = record if record is not None else ForwardRecord()
        grad = torch.is_grad_enabled()
        prefix = self.vit.num_prefix_tokens
        with torch.set_grad_enabled(grad and plan.train_stem):
            x = self.embed(images)
        original = x.shape[1] - prefix
        sizes = TokenSizes(proportional=plan.proportional_attention)
        for l, block in enumerate(self.vit.blocks):
            before = x[:, 0].detach()
            keep = kept_tokens(plan.keep[l], x.shape[1] - prefix, original, self.keep_reference)
            merge_r = merge_count(plan.merge_at(l), x.shape[1], prefix)
            record.tokens_in.append(x.shape[1])
            record.merged.append(merge_r)
            record.sized.append(sizes.size is not None)
            record.input_grad.append(x.requires_grad)
            with torch.set_grad_enabled(grad and (x.requires_grad or l >= plan.first_trainable)):
                x = run_block(block, x, keep, prefix, self.drop_at, sizes, merge_r)
            record.tokens_out.append(x.shape[1])
            record.deltas.append((x[:, 0].detach().float() - before.float()).pow(2).sum(-1).mean())
        record.head_input_grad = x.requires_grad
        return self.classify(x)

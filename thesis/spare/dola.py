"""DoLa baseline of Table 5.1: decoding by contrasting layers (Chuang et al., ICLR 2024).

Each step scores the next token as log p_mature - a log p_premature (thesis 5.1.9; a = 1 is the
original DoLa, a = 0 plain greedy decoding), only over tokens the final layer finds plausible,
p_mature >= plausibility * max p_mature; the others get -inf. p_premature is the early exit of one
candidate layer (its block output through the final norm and the LM head, plus Gemma2's logit
soft-cap), chosen per step and per row as the candidate whose next-token distribution has the largest
Jensen-Shannon divergence from the final one. Candidates come from a bucket: `low` / `high` are
the even layers of the lower / upper half (the last 20 below the top, or the first 20 from the start,
for models deeper than 40 layers; layer 0 = the embeddings, skipped when they are tied to the LM head).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from thesis.core.errors import ConfigError
from thesis.spare.generation import _batches, _pad_left, first_line
from thesis.spare.hooks import decoder_layers

BUCKETS = ("low", "high")


def candidate_layers(model: nn.Module, bucket: str | Sequence[int]) -> list[int]:
    """Premature candidates as indices of `output_hidden_states` (0 = embeddings, i = after i blocks)."""
    n = len(decoder_layers(model))
    if not isinstance(bucket, str):
        layers = [int(layer) for layer in bucket]
        if not layers or not all(0 <= layer < n for layer in layers):
            raise ConfigError(f"DoLa candidate layers {layers} must be a non-empty subset of [0, {n})")
        return layers
    if bucket not in BUCKETS:
        raise ConfigError(f"DoLa bucket {bucket!r} is not one of {BUCKETS} or a list of layers")
    start = 2 if getattr(model.config, "tie_word_embeddings", False) else 0
    if bucket == "low":
        stop = n // 2 if n <= 40 else 20
        return list(range(start, stop, 2)) or [start]
    return list(range(n // 2 if n <= 40 else n - 20, n, 2))


def early_exit_logits(model: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """Next-token logits read from an intermediate block output (final norm, LM head, soft-cap)."""
    logits = model.lm_head(model.model.norm(hidden)).float()
    cap = getattr(model.config, "final_logit_softcapping", None)
    return torch.tanh(logits / cap) * cap if cap else logits


def jensen_shannon(logp: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
    """JSD (nats) between the distributions of two log-prob tensors, over the last dimension."""
    logp, logq = torch.broadcast_tensors(logp, logq)
    logm = torch.logsumexp(torch.stack([logp, logq]), 0) - math.log(2)
    kl_p = (logp.exp() * (logp - logm)).sum(-1)
    kl_q = (logq.exp() * (logq - logm)).sum(-1)
    return 0.5 * (kl_p + kl_q)


def plausible(logp_mature: torch.Tensor, plausibility: float) -> torch.Tensor:
    """Mask of tokens with p >= plausibility * max p (log domain)."""
    return logp_mature >= logp_mature.max(-1, keepdim=True).values + math.log(plausibility)


def dola_scores(logp_mature: torch.Tensor, candidate_logps: torch.Tensor, contrast: float,
                plausibility: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """(scores (B, V), chosen candidate index (B,)) from the final log-probs (B, V) and the candidates'
    log-probs (C, B, V)."""
    if not 0 < plausibility <= 1:
        raise ConfigError(f"DoLa plausibility {plausibility} must be in (0, 1]")
    divergence = jensen_shannon(logp_mature.unsqueeze(0), candidate_logps)  # (C, B)
    chosen = divergence.argmax(0)
    premature = candidate_logps[chosen, torch.arange(len(chosen))]
    scores = logp_mature - contrast * premature
    return scores.masked_fill(~plausible(logp_mature, plausibility), float("-inf")), chosen


@torch.no_grad()
def dola_generate(model, tokenizer, prompts: list[str], contrast: float, bucket: str | Sequence[int] = "high",
                  plausibility: float = 0.1, max_new_tokens: int = 12, batch_size: int = 16) -> list[str]:
    """Greedy DoLa answers (text up to the first newline or end of sequence); recomputed without a
    cache each step (answers are a few tokens long)."""
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    candidates = candidate_layers(model, bucket)
    answers = []
    for _, chunk in _batches(prompts, batch_size):
        rows = [tokenizer(p)["input_ids"] for p in chunk]
        for _ in range(max_new_tokens):
            out = model(**_pad_left(rows, pad, device), output_hidden_states=True)
            logp_mature = out.logits[:, -1].float().log_softmax(-1)
            candidate_logps = torch.stack([early_exit_logits(model, out.hidden_states[layer][:, -1]).log_softmax(-1)
                                           for layer in candidates])
            scores, _ = dola_scores(logp_mature, candidate_logps, contrast, plausibility)
            rows = [row + [token] for row, token in zip(rows, scores.argmax(-1).tolist())]
        answers += [first_line(tokenizer.decode(_until_eos(row[-max_new_tokens:], tokenizer.eos_token_id),
                                                skip_special_tokens=True)) for row in rows]
    return answers


def _until_eos(tokens: list[int], eos: int | None) -> list[int]:
    """Generated tokens before the first end-of-sequence token (where `model.generate` stops)."""
    return tokens[:tokens.index(eos)] if eos is not None and eos in tokens else tokens

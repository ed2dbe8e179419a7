"""Masked-diffusion decoding (LLaDA style, optionally Dream's shift) and greedy autoregressive decoding.

Both take `logits_of(ids) -> (B, S, V)`, a model that returns logits for every position, and call
`on_step(step, ids)` before each forward pass (where `SinkCapture.begin_step` and the token record
hook in), so the same sink capture serves a DLM and its autoregressive reference.

Masked diffusion (thesis 5.4, spec B.1): the response starts as `gen_length` mask tokens after the
prompt and is split into blocks of `block_length`, unmasked left to right. Each block gets
`steps / n_blocks` denoising steps; at each step the model predicts every position (greedy argmax),
and of the still-masked positions of the current block the most confident predictions (softmax
probability of the argmax) are kept while the others stay masked ("low-confidence remasking"). The
block's mask count is spread over its steps as evenly as possible, earlier steps taking the
remainder; with steps = gen_length one token is unmasked per step (the thesis's figures imply this).
`shift=True` reads the prediction for position i from the logits at i - 1 (Dream's objective); with
`block_length = gen_length` any masked position may be unmasked (Dream's order), a simplification of
Dream's own sampler.
"""

from __future__ import annotations

from typing import Callable

import torch

from thesis.core.errors import ConfigError

LogitsFn = Callable[[torch.Tensor], torch.Tensor]
StepHook = Callable[[int, torch.Tensor], None]


def transfer_counts(n_masked: torch.Tensor, steps: int) -> torch.Tensor:
    """(B,) mask counts -> (B, steps) tokens to unmask per step, as even as possible, earlier
    steps taking the remainder."""
    base, remainder = n_masked // steps, n_masked % steps
    return base[:, None] + (torch.arange(steps, device=n_masked.device)[None, :] < remainder[:, None]).long()


def unmask_most_confident(ids: torch.Tensor, logits: torch.Tensor, mask_id: int, start: int, end: int,
                          counts: torch.Tensor) -> torch.Tensor:
    """Fill `counts[b]` masked positions of ids[b, start:end] with their argmax predictions, the most
    confident first; every other masked position stays masked."""
    probabilities = torch.softmax(logits.float(), dim=-1)
    confidence, prediction = probabilities.max(dim=-1)
    window = torch.zeros_like(ids, dtype=torch.bool)
    window[:, start:end] = True
    confidence = confidence.masked_fill(~(window & (ids == mask_id)), -torch.inf)
    out = ids.clone()
    for row, count in enumerate(counts.tolist()):
        chosen = confidence[row].topk(count).indices
        out[row, chosen] = prediction[row, chosen]
    return out


def check_schedule(gen_length: int, block_length: int, steps: int) -> int:
    """Steps per block; refuses lengths that do not divide."""
    if gen_length % block_length:
        raise ConfigError(f"gen_length={gen_length} is not a multiple of block_length={block_length}: change one")
    n_blocks = gen_length // block_length
    if steps % n_blocks:
        raise ConfigError(f"steps={steps} is not a multiple of the {n_blocks} blocks: set steps to a multiple")
    return steps // n_blocks


@torch.no_grad()
def diffusion_generate(logits_of: LogitsFn, prompt: torch.Tensor, mask_id: int, gen_length: int,
                       block_length: int, steps: int, shift: bool = False,
                       on_step: StepHook | None = None) -> torch.Tensor:
    """Prompt (B, P) -> (B, P + gen_length) with every response position unmasked."""
    steps_per_block = check_schedule(gen_length, block_length, steps)
    masks = torch.full((prompt.shape[0], gen_length), mask_id, dtype=prompt.dtype, device=prompt.device)
    ids = torch.cat([prompt, masks], dim=1)
    step = 0
    for start in range(prompt.shape[1], ids.shape[1], block_length):
        end = start + block_length
        counts = transfer_counts((ids[:, start:end] == mask_id).sum(dim=1), steps_per_block)
        for block_step in range(steps_per_block):
            if on_step is not None:
                on_step(step, ids)
            logits = logits_of(ids)
            if shift:
                logits = torch.cat([logits[:, :1], logits[:, :-1]], dim=1)
            ids = unmask_most_confident(ids, logits, mask_id, start, end, counts[:, block_step])
            step += 1
    return ids


@torch.no_grad()
def autoregressive_generate(logits_of: LogitsFn, prompt: torch.Tensor, gen_length: int,
                            on_step: StepHook | None = None) -> torch.Tensor:
    """Greedy decoding without a KV cache, so each step's attention covers the whole sequence."""
    ids = prompt
    for step in range(gen_length):
        if on_step is not None:
            on_step(step, ids)
        next_token = logits_of(ids)[:, -1].argmax(dim=-1, keepdim=True)
        ids = torch.cat([ids, next_token], dim=1)
    return ids

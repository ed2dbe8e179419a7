"""Greedy decoding and answer likelihoods for any transformers causal LM, batched and left-padded.

`generate` decodes greedily (`model.generate`, KV cache), optionally under residual-stream edits
that touch the prompt pass only, and optionally capturing last-position activations of that pass.
`answer_losses` gives the mean token NLL of a continuation, over the answer only or over the
whole prompt + answer (the authors' confidence weights use the latter). `cad_generate` is
context-aware decoding (Shi et al.): logits (1 + a) l(y | c, x) - a l(y | x), re-run without a
cache (answers are a few tokens long).
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Iterable

import torch
from tqdm.auto import tqdm

from thesis.spare.hooks import Capture, EditFn, edit


def _batches(items: list, size: int) -> Iterable[tuple[int, list]]:
    for start in range(0, len(items), size):
        yield start, items[start:start + size]


def encode(tokenizer, texts: list[str], device: torch.device) -> dict[str, torch.Tensor]:
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer(texts, return_tensors="pt", padding=True).to(device)


def first_line(text: str) -> str:
    return text.split("\n")[0].strip()


@torch.no_grad()
def generate(model, tokenizer, prompts: list[str], max_new_tokens: int = 12, batch_size: int = 16,
             edits: dict[int, EditFn] | None = None, capture: Capture | None = None,
             progress: bool = False) -> list[str]:
    """Greedy answers (text up to the first newline) of `prompts`."""
    device = next(model.parameters()).device
    answers: list[str] = []
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    for _, chunk in tqdm(list(_batches(prompts, batch_size)), desc="generate", disable=not progress, leave=False):
        batch = encode(tokenizer, chunk, device)
        with edit(model, edits), (capture if capture is not None else nullcontext()):
            out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad)
        new = out[:, batch["input_ids"].shape[1]:]
        answers += [first_line(t) for t in tokenizer.batch_decode(new, skip_special_tokens=True)]
    return answers


@torch.no_grad()
def answer_losses(model, tokenizer, prompts: list[str], answers: list[str], whole_sequence: bool = False,
                  batch_size: int = 16) -> torch.Tensor:
    """Mean token NLL of `" " + answer` after each prompt (or of the whole prompt + answer)."""
    device = next(model.parameters()).device
    losses = []
    for start, chunk in _batches(list(zip(prompts, answers)), batch_size):
        prompt_ids = [tokenizer(p)["input_ids"] for p, _ in chunk]
        full_ids = [tokenizer(p + " " + a)["input_ids"] for p, a in chunk]
        width = max(map(len, full_ids))
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        scored = torch.zeros_like(ids, dtype=torch.bool)
        for row, (p_ids, f_ids) in enumerate(zip(prompt_ids, full_ids)):
            offset = width - len(f_ids)
            ids[row, offset:] = torch.tensor(f_ids)
            mask[row, offset:] = 1
            first = offset + (1 if whole_sequence else min(len(p_ids), len(f_ids) - 1))
            scored[row, first:] = True
        logits = model(**with_positions({"input_ids": ids.to(device), "attention_mask": mask.to(device)})).logits.float().cpu()
        nll = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), ids[:, 1:], reduction="none")
        weight = scored[:, 1:].float()
        losses.append((nll * weight).sum(1) / weight.sum(1).clamp_min(1))
    return torch.cat(losses)


def _pad_left(rows: list[list[int]], pad: int, device: torch.device) -> dict[str, torch.Tensor]:
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, row in enumerate(rows):
        ids[i, width - len(row):] = torch.tensor(row)
        mask[i, width - len(row):] = 1
    return with_positions({"input_ids": ids.to(device), "attention_mask": mask.to(device)})


def with_positions(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Position ids that skip the left padding (what `generate` computes for itself)."""
    return {**batch, "position_ids": (batch["attention_mask"].cumsum(-1) - 1).clamp(min=0)}


@torch.no_grad()
def cad_generate(model, tokenizer, prompts: list[str], context_free: list[str], alpha: float,
                 max_new_tokens: int = 12, batch_size: int = 16) -> list[str]:
    """Greedy decoding of (1 + alpha) log P(y | c, x) - alpha log P(y | x)."""
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    answers = []
    for start, chunk in _batches(prompts, batch_size):
        with_ctx = [tokenizer(p)["input_ids"] for p in chunk]
        without = [tokenizer(p)["input_ids"] for p in context_free[start:start + len(chunk)]]
        generated: list[list[int]] = [[] for _ in chunk]
        for _ in range(max_new_tokens):
            a = model(**_pad_left([p + g for p, g in zip(with_ctx, generated)], pad, device))
            b = model(**_pad_left([p + g for p, g in zip(without, generated)], pad, device))
            scores = (1 + alpha) * a.logits[:, -1].float().log_softmax(-1) - alpha * b.logits[:, -1].float().log_softmax(-1)
            for g, t in zip(generated, scores.argmax(-1).tolist()):
                g.append(t)
        answers += [first_line(tokenizer.decode(g, skip_special_tokens=True)) for g in generated]
    return answers

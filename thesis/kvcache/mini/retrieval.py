"""M3 of the miniature (spec F.b; thesis Figs. 4.4, 4.36, 4.43, Table 4.3): passkey and needle accuracy
when the context is compressed at prefill.

All prompts of a task have the same context and question lengths (`documents.py`), so they run in
batches without padding: prefill the context under the press (each layer compressed right after its
attention), append the question uncompressed, then decode greedily as many bytes as the answer has;
exact match of the digits. `query_aware` prefills context and question together, so the question is
compressed too (the KNorm authors' passkey/NIAH protocol, spec E.4).
"""

from __future__ import annotations

from contextlib import nullcontext
from itertools import islice

import torch
from torch import Tensor, nn
from transformers import DynamicCache

from thesis.kvcache.greedy import greedy_tokens, last_logits
from thesis.kvcache.mini.documents import Document
from thesis.kvcache.mini.tokenizer import BOS
from thesis.kvcache.press import PressBase


def prompt_tensors(docs: list[Document]) -> tuple[Tensor, Tensor, Tensor]:
    """(context with BOS, question, answer) byte tensors; every document must have the same lengths."""
    shapes = {(len(d.context), len(d.question), len(d.answer)) for d in docs}
    if len(shapes) != 1:
        raise ValueError(f"prompts of one batch need equal context/question/answer lengths; got {sorted(shapes)[:3]}")
    context = torch.tensor([[BOS, *d.context] for d in docs])
    question = torch.tensor([list(d.question) for d in docs])
    answer = torch.tensor([list(d.answer) for d in docs])
    return context, question, answer


@torch.no_grad()
def greedy_bytes(model: nn.Module, context: Tensor, question: Tensor, n_new: int, press: PressBase | None,
                 query_aware: bool = False) -> Tensor:
    """(batch, n_new) greedy continuation after context + question, the context compressed by `press`."""
    device = model.device
    context, question = context.to(device), question.to(device)
    if query_aware:
        context, question = torch.cat([context, question], dim=1), question[:, :0]
    cache = DynamicCache(config=model.config)
    with press(model) if press is not None else nullcontext():
        logits = last_logits(model, context, cache)
        if question.shape[1]:
            logits = last_logits(model, question, cache)
        generated = list(islice(greedy_tokens(model, cache, logits), n_new))
    return torch.cat(generated, dim=1).cpu()


def accuracy_per_prompt(model: nn.Module, docs: list[Document], press: PressBase | None, batch_size: int,
                        query_aware: bool = False) -> Tensor:
    """(n,) 1.0 where the greedy answer equals the document's answer exactly."""
    context, question, answer = prompt_tensors(docs)
    hits = []
    for start in range(0, len(docs), batch_size):
        part = slice(start, start + batch_size)
        out = greedy_bytes(model, context[part], question[part], answer.shape[1], press, query_aware)
        hits.append((out == answer[part]).all(dim=1).double())
    return torch.cat(hits)

"""Runner `run_sae_train` (thesis 5.1.8): TopK SAEs on the residual stream (block outputs) of a causal
LM, trained on text documents streamed from disk. Documents are tokenised, joined with the EOS token
and cut into sequences of `method.ctx_len` tokens (EleutherAI/sae's chunking); every position's
block output of each `method.layers` layer fills a buffer of `method.buffer_tokens` activations,
which `StreamingSAETrainer` visits once; training stops after `method.max_tokens` tokens. The SAEs are
saved in EleutherAI/sae's layout (`<run>/sae/layers.{i}/`), the one `model.sae` reads for SpARE."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Iterable, Iterator

import torch
from omegaconf import DictConfig

from thesis.core.errors import DataNotFoundError
from thesis.core.rundir import RunDir
from thesis.spare.hooks import Capture
from thesis.spare.sae_io import save_eleuther
from thesis.spare.sae_stream import StreamingSAETrainer
from thesis.spare.setup import load_model


def documents(root: str | Path, pattern: str, field: str) -> Iterator[str]:
    """The `field` of every row of the files `root/pattern` (.jsonl, .jsonl.gz, .parquet), in name order."""
    files = sorted(Path(root).glob(pattern))
    if not files:
        raise DataNotFoundError(f"no corpus files {pattern} under {root}: download RedPajama-Data-V2 documents "
                                "(thesis/spare/README.md, 'SAE training') or point data.root / data.files at them")
    for path in files:
        if path.name.endswith(".parquet"):
            import pandas as pd

            yield from (str(text) for text in pd.read_parquet(path, columns=[field])[field])
            continue
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    yield json.loads(line)[field]


def token_sequences(tokenizer, texts: Iterable[str], ctx_len: int) -> Iterator[list[int]]:
    """Consecutive `ctx_len`-token windows of the texts joined by EOS (the incomplete tail is dropped)."""
    eos = tokenizer.eos_token_id
    pending: list[int] = []
    for text in texts:
        pending += tokenizer(text, add_special_tokens=False)["input_ids"] + ([eos] if eos is not None else [])
        while len(pending) >= ctx_len:
            yield pending[:ctx_len]
            pending = pending[ctx_len:]


def batches(sequences: Iterator[list[int]], size: int) -> Iterator[torch.Tensor]:
    batch: list[list[int]] = []
    for sequence in sequences:
        batch.append(sequence)
        if len(batch) == size:
            yield torch.tensor(batch)
            batch = []
    if batch:
        yield torch.tensor(batch)


def run_sae_train(cfg: DictConfig, run: RunDir) -> dict[str, object]:
    method, data = cfg.method, cfg.data
    model, tokenizer = load_model(cfg)
    device = next(model.parameters()).device
    d = model.config.hidden_size
    layers = list(method.layers)
    trainers = {layer: StreamingSAETrainer(method.expansion * d, method.k, method.activation, method.batch_size,
                                           method.lr, method.lr_scale, method.l1, cfg.seed + layer, device)
                for layer in layers}
    buffers: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}
    buffered, seen = 0, 0

    def flush() -> None:
        for layer in layers:
            if buffers[layer]:
                trainers[layer].fit_buffer(torch.cat(buffers[layer]))
                buffers[layer] = []

    texts = documents(data.root, data.files, data.text_field)
    for ids in batches(token_sequences(tokenizer, texts, method.ctx_len), method.sequences_per_forward):
        with Capture(model, layers, ("hidden",), last=False) as capture, torch.no_grad():
            model(input_ids=ids.to(device))
        for (_, layer), acts in capture.result().items():
            buffers[layer].append(acts.reshape(-1, d))
        buffered += ids.numel()
        seen += ids.numel()
        if buffered >= method.buffer_tokens:
            flush()
            buffered = 0
        if seen >= method.max_tokens:
            break
    flush()
    metrics: dict[str, object] = {"tokens": seen}
    curve = []
    for layer, trainer in trainers.items():
        save_eleuther(trainer.result(), run.path / "sae" / f"layers.{layer}")
        losses = trainer.losses
        curve += [{"layer": layer, "step": step, "fvu": loss} for step, loss in enumerate(losses)
                  if step % method.log_every == 0 or step == len(losses) - 1]
        tail = losses[-min(len(losses), 20):]
        metrics.update({f"layer{layer}/steps": len(losses), f"layer{layer}/fvu_first": losses[0],
                        f"layer{layer}/fvu_last20": sum(tail) / len(tail)})
    run.write_table("sae_loss", curve)
    return metrics

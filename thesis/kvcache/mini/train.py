"""Training the kvmini Llama from scratch (spec F.b recipe): AdamW (0.9, 0.95), linear warm-up then
cosine decay to `min_lr`, weight decay on matrices only, gradient clipping, bf16 autocast on a GPU.
The loss is the next-byte cross-entropy averaged with the stream's per-label weights (sum of w x loss
over sum of w): with every weight 1 it is the model's own mean loss over the non-ignored labels.

Resumable: every `checkpoint_every` steps the model (`save_pretrained`), the optimiser, the
schedule, the step and the data stream's generator state are written to `<run>/checkpoints/resume/`
through a staging folder renamed into place, so a killed run restarts at its last checkpoint and
draws the same batches an uninterrupted run would. The final weights go to
`<run>/checkpoints/model/` the same way; a run that finds them there skips training.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from thesis.core.errors import NonFiniteLossError
from thesis.kvcache.mini.documents import IGNORE, TrainingStream
from thesis.kvcache.mini.model import build_model

TRAIN_INFO = "train.json"


def learning_rate(step: int, steps: int, warmup: int, lr: float, min_lr: float) -> float:
    """Linear warm-up over `warmup` steps, then cosine from lr down to min_lr at the last step."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, steps - warmup - 1))
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * progress))


def weighted_loss(logits: Tensor, labels: Tensor, weights: Tensor) -> Tensor:
    """Cross-entropy of logits[:, t] against labels[:, t + 1], weighted by weights[:, t + 1] (ignored
    labels count 0), normalised by the sum of the weights."""
    targets = labels[:, 1:]
    losses = F.cross_entropy(logits[:, :-1].float().transpose(1, 2), targets.clamp(min=0), reduction="none")
    kept = weights[:, 1:].float() * (targets != IGNORE)
    return (losses * kept).sum() / kept.sum()


def _replace_folder(staging: Path, final: Path) -> None:
    old = final.with_name(final.name + ".old")
    if final.exists():
        final.replace(old)
    staging.replace(final)
    shutil.rmtree(old, ignore_errors=True)


def _save(model, folder: Path, extra: Mapping[str, Any], optimiser=None) -> None:
    staging = folder.with_name(f"{folder.name}.tmp{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(str(staging), safe_serialization=True)
    if optimiser is not None:
        torch.save(optimiser.state_dict(), staging / "optimizer.pt")
    (staging / TRAIN_INFO).write_text(json.dumps(dict(extra), default=str))
    _replace_folder(staging, folder)


def optimiser_for(model: torch.nn.Module, train: Mapping[str, Any], device: torch.device) -> torch.optim.AdamW:
    matrices = [p for p in model.parameters() if p.ndim >= 2]
    others = [p for p in model.parameters() if p.ndim < 2]
    groups = [{"params": matrices, "weight_decay": train["weight_decay"]}, {"params": others, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=train["lr"], betas=tuple(train["betas"]), fused=device.type == "cuda")


def train_model(shape: Mapping[str, Any], train: Mapping[str, Any], stream: TrainingStream, folder: Path,
                device: torch.device, seed: int) -> dict[str, Any]:
    """Train (or resume, or skip when `folder/model` holds the final weights); returns training info."""
    final, resume = folder / "model", folder / "resume"
    if (final / TRAIN_INFO).is_file():
        return {**json.loads((final / TRAIN_INFO).read_text()), "cached": True}
    model = build_model(shape, seed).to(device)
    optimiser = optimiser_for(model, train, device)
    start, losses, seconds = 0, [], 0.0
    if (resume / TRAIN_INFO).is_file():
        from transformers import LlamaForCausalLM

        state = json.loads((resume / TRAIN_INFO).read_text())
        model = LlamaForCausalLM.from_pretrained(str(resume), dtype=torch.float32).to(device)
        optimiser = optimiser_for(model, train, device)
        optimiser.load_state_dict(torch.load(resume / "optimizer.pt", map_location=device, weights_only=True))
        stream.rng.bit_generator.state = state["stream_state"]
        start, losses, seconds = state["step"], state["losses"], state["seconds"]
    model.train()
    forward = torch.compile(model) if train.get("compile") and device.type == "cuda" else model
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
    steps, began = train["steps"], time.time() - seconds
    bar = tqdm(range(start, steps), desc="kvmini train", initial=start, total=steps, dynamic_ncols=True, mininterval=2.0)
    for step in bar:
        for group in optimiser.param_groups:
            group["lr"] = learning_rate(step, steps, train["warmup"], train["lr"], train["min_lr"])
        ids, labels, weights = (t.to(device, non_blocking=True) for t in stream.batch())
        with autocast:
            logits = forward(input_ids=ids).logits
        loss = weighted_loss(logits, labels, weights)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), train["grad_clip"])
        optimiser.step()
        if step % train["log_every"] == 0 or step == steps - 1:
            value = float(loss.detach())
            if not math.isfinite(value):
                raise NonFiniteLossError(f"kvmini training loss became {value} at step {step}: lower method.train.lr")
            losses.append([step, value])
            bar.set_postfix(loss=f"{value:.3f}")
        every = train.get("checkpoint_every")
        if every and (step + 1) % every == 0 and step + 1 < steps:
            _save(model, resume, {"step": step + 1, "losses": losses, "seconds": time.time() - began,
                                  "stream_state": stream.rng.bit_generator.state}, optimiser)
    info = {"steps": steps, "tokens": steps * stream.batch_size * stream.seq_len, "seconds": time.time() - began,
            "final_loss": losses[-1][1] if losses else float("nan"), "losses": losses}
    _save(model, final, info)
    shutil.rmtree(resume, ignore_errors=True)
    return {**info, "cached": False}

"""Training the miniature's three models, each saved with `save_pretrained` and reloaded with
`from_pretrained`, so a rerun of the same run directory skips the training it already did.

Batches are drawn (seeded) from a pool of training sequences generated once per run, which is much
cheaper than generating every batch afresh. AdamW with linear warm-up and cosine decay, gradient
clipping. `dream` starts from the saved `arm` checkpoint (AR initialisation, as Dream-7B).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig
from tqdm.auto import tqdm

from thesis.core.errors import CheckpointError
from thesis.sinks.mini.corpus import SynthReasoning
from thesis.sinks.mini.model import build_model, check_mode, training_loss


def training_pool(corpus: SynthReasoning, size: int, seed: int) -> torch.Tensor:
    """(size, seq_length) training sequences (tasks A and B in equal expectation), never held out."""
    return corpus.batch(size, np.random.default_rng(seed), "train")[0]


def load_checkpoint(folder: Path, device: torch.device):
    from transformers import LlamaForCausalLM

    if not (folder / "config.json").is_file():
        raise CheckpointError(f"no checkpoint in {folder}: train the `arm` mode first (it initialises `dream`)")
    return LlamaForCausalLM.from_pretrained(str(folder), attn_implementation="sdpa").to(device)


def cosine_with_warmup(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def train_mode(mode: str, pool: torch.Tensor, prompt_length: int, model_cfg: DictConfig, seed: int,
               checkpoints: Path, device: torch.device) -> dict[str, object]:
    """Train one mode (or load it if its checkpoint exists); returns its info (losses, time per step)."""
    check_mode(mode)
    folder = checkpoints / mode
    if (folder / "train.json").is_file():
        return json.loads((folder / "train.json").read_text())
    train = model_cfg.train
    init = train.init.get(mode)
    if init:
        model = load_checkpoint(checkpoints / init, device)
    else:
        model = build_model(model_cfg.shape, pool.shape[1], seed).to(device)
    model.train()
    optimiser = torch.optim.AdamW(model.parameters(), lr=train.lr, weight_decay=train.weight_decay,
                                  betas=(0.9, 0.95))
    steps = int(train.steps[mode])
    warmup = max(1, int(train.warmup * steps))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda s: cosine_with_warmup(s, steps, warmup))
    generator = torch.Generator(device=device).manual_seed(seed + 1)
    rows = torch.Generator().manual_seed(seed + 2)
    losses: list[float] = []
    start = time.perf_counter()
    for _ in tqdm(range(steps), desc=f"train {mode}", leave=False):
        batch = pool[torch.randint(len(pool), (train.batch_size,), generator=rows)].to(device)
        loss = training_loss(model, mode, batch, prompt_length, train.t_min, generator)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), train.grad_clip)
        optimiser.step()
        schedule.step()
        losses.append(loss.item())
    seconds = time.perf_counter() - start
    info = {"mode": mode, "steps": steps, "init": init or "random", "seconds_per_step": seconds / max(steps, 1),
            "final_loss": float(np.mean(losses[-max(1, steps // 20):])) if losses else float("nan"),
            "loss_curve": losses[:: max(1, steps // 100)]}
    model.save_pretrained(str(folder), safe_serialization=True)
    (folder / "train.json").write_text(json.dumps(info))
    return info

"""Training the miniature's Llama on the synthetic world, cached so both miniatures share it.

The checkpoint lives in `<paths.output_dir>/.cache/spare_lm/<hash>/` where the hash covers the
world, the model shape, the training settings and the seed: `spare_mini` and `resid_probe_mini`
with the same data.world and model settings and seed train it once (whichever runs first) and the other loads
it. Loss on the answer token only; AdamW, one-cycle schedule with 5% warm-up.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from thesis.spare.synth import World, word_tokenizer


def world_of(world: DictConfig, seed: int) -> World:
    return World(world.n_entities, world.n_relations, world.n_values, world.n_sources, world.strength_shift, seed)


def cache_dir(cfg: DictConfig) -> Path:
    key = json.dumps({"world": OmegaConf.to_container(cfg.data.world, resolve=True),
                      "model": OmegaConf.to_container(cfg.model, resolve=True), "seed": cfg.seed}, sort_keys=True)
    return Path(cfg.paths.output_dir) / ".cache" / "spare_lm" / hashlib.sha256(key.encode()).hexdigest()[:10]


def build_model(world: World, shape: DictConfig):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=len(world.vocab), hidden_size=shape.hidden, intermediate_size=4 * shape.hidden,
                         num_hidden_layers=shape.layers, num_attention_heads=shape.heads,
                         num_key_value_heads=shape.heads, max_position_embeddings=64, bos_token_id=1, eos_token_id=2,
                         pad_token_id=0)
    return LlamaForCausalLM(config)


def train_lm(world: World, model_cfg: DictConfig, seed: int, device: torch.device) -> tuple[torch.nn.Module, list[float]]:
    torch.manual_seed(seed)
    model = build_model(world, model_cfg.shape).to(device)
    train = model_cfg.train
    optimiser = torch.optim.AdamW(model.parameters(), lr=train.lr, weight_decay=train.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=train.lr, total_steps=train.steps, pct_start=0.05)
    rng = np.random.default_rng(seed + 1)
    losses = []
    for _ in tqdm(range(train.steps), desc="synth LM", leave=False):
        ids, labels = world.training_batch(train.batch_size, rng, tuple(train.mixture))
        logits = model(input_ids=ids.to(device), logits_to_keep=1).logits[:, -1]
        loss = torch.nn.functional.cross_entropy(logits, labels.to(device))
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        losses.append(loss.item())
    return model.eval(), losses


def trained_lm(cfg: DictConfig, device: torch.device):
    """(model, tokenizer, world, info): loaded from the cache or trained and cached."""
    from transformers import LlamaForCausalLM

    world = world_of(cfg.data.world, cfg.seed)
    tokenizer = word_tokenizer(world)
    folder = cache_dir(cfg)
    if (folder / "model.safetensors").is_file():
        model = LlamaForCausalLM.from_pretrained(str(folder)).to(device).eval()
        return model, tokenizer, world, json.loads((folder / "train.json").read_text())
    start = time.time()
    model, losses = train_lm(world, cfg.model, cfg.seed, device)
    info = {"train_seconds": time.time() - start, "final_loss": float(np.mean(losses[-50:])), "cached": False}
    staging = folder.with_name(f"{folder.name}.tmp{os.getpid()}")
    model.save_pretrained(str(staging), safe_serialization=True)
    (staging / "train.json").write_text(json.dumps({**info, "cached": True}))
    try:
        staging.replace(folder)
    except OSError:  # another run cached the same model first
        shutil.rmtree(staging, ignore_errors=True)
    return model, tokenizer, world, info

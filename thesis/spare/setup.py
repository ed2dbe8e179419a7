"""Loading what a knowledge-conflict run needs from its config: model, tokenizer, data, SAEs."""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig

from thesis.core.hardware import device_of
from thesis.core.models import load_hf_causal_lm, load_hf_tokenizer
from thesis.spare.em import exact_match, substring_of_context
from thesis.spare.generation import generate
from thesis.spare.kc_data import Instance, block, demo_text, read_split, sample_demos
from thesis.spare.sae import SparseAutoencoder
from thesis.spare.sae_io import load_sae


def load_model(cfg: DictConfig):
    device = device_of(cfg.hardware)
    model = load_hf_causal_lm(cfg.model.path, dtype=getattr(torch, cfg.model.dtype)).to(device).eval()
    tokenizer = load_hf_tokenizer(cfg.model.get("tokenizer") or cfg.model.path)
    return model, tokenizer


def load_instances(data: DictConfig) -> tuple[list[Instance], list[Instance]]:
    """Evaluation rows and the demonstration pool (Macnoise: split `train`; NQSwap: the same rows)."""
    rows = read_split(data.root, data.split, data.name, data.max_rows)
    if not data.demo_split:
        return rows, rows
    return rows, read_split(data.root, data.demo_split, data.name, start_idx=len(rows))


def memorised(model, tokenizer, rows: list[Instance], pool: list[Instance], data: DictConfig,
              batch_size: int) -> list[Instance]:
    """Rows whose closed-book k-shot greedy answer matches the memory answer (spec A.5); every row
    when `data.memorised.required` is false."""
    if not data.memorised.required:
        return rows
    prompts = [demo_text(sample_demos(pool, data.memorised.k_shot, data.dev_seed, r.group), "closed")
               + block(None, r.question) for r in rows]
    answers = generate(model, tokenizer, prompts, data.max_new_tokens, batch_size)
    return [r for r, a in zip(rows, answers) if exact_match(a, r.org_answer)]


def context_match(data: DictConfig, prediction: str, instance: Instance, rule: str | None = None) -> bool:
    """Whether a prediction counts as the context answer (Macnoise: substring of the context)."""
    rule = rule or data.em_c
    if rule == "substring_of_context":
        return substring_of_context(prediction, instance.sub_context)
    return exact_match(prediction, instance.sub_answer)


def load_saes(sae_cfg: DictConfig, layers: list[int], device: torch.device) -> dict[int, SparseAutoencoder]:
    """One pretrained SAE per edited layer, from `<root>/<pattern with {layer}>`."""
    return {layer: load_sae(sae_cfg.format, Path(sae_cfg.root) / sae_cfg.pattern.format(layer=layer)).to(device)
            for layer in layers}

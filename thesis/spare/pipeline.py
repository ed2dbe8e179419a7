"""The SpARE pipeline pieces shared by the paper-scale runner and the miniature (spec A.4):
collect last-position activations with the behaviour they led to, build each layer's functional
vectors from its SAE, and the group means the dense baselines use."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from thesis.core.errors import ConfigError
from thesis.spare.em import exact_match
from thesis.spare.generation import answer_losses, generate
from thesis.spare.hooks import Capture
from thesis.spare.sae import SparseAutoencoder
from thesis.spare.selection import FunctionalVectors, confidence_weights, functional_vectors

GROUPINGS = ("em", "loglik")


@dataclass
class Collected:
    """Activations (layer -> (N, d)), predictions, label (1 = C, 0 = M, -1 = neither), losses."""

    acts: dict[int, torch.Tensor]
    predictions: list[str]
    label: np.ndarray
    loss_context: np.ndarray
    loss_memory: np.ndarray

    def group(self, layer: int, value: int) -> torch.Tensor:
        return self.acts[layer][torch.as_tensor(self.label == value)]


def behaviour_labels(predictions: Sequence[str], context_answers: Sequence[Sequence[str]],
                     memory_answers: Sequence[Sequence[str]]) -> np.ndarray:
    """1 if the prediction matches C, 0 if it matches M, -1 otherwise; both is an error (code)."""
    labels = []
    for pred, c, m in zip(predictions, context_answers, memory_answers):
        is_c, is_m = exact_match(pred, c), exact_match(pred, m)
        if is_c and is_m:
            raise ValueError(f"prediction {pred!r} matches both the context and the memory answer")
        labels.append(1 if is_c else 0 if is_m else -1)
    return np.array(labels, dtype=int)


def collect(model, tokenizer, prompts: list[str], context_answers: list[Sequence[str]],
            memory_answers: list[Sequence[str]], layers: list[int], grouping: str, weighting: str,
            max_new_tokens: int, batch_size: int) -> Collected:
    """Greedy answers and last-position hidden states of `prompts`; groups by EM, or by which
    answer is likelier (`loglik`, for models that answer nothing right)."""
    if grouping not in GROUPINGS:
        raise ConfigError(f"spare.grouping={grouping!r} is not one of {GROUPINGS}")
    capture = Capture(model, layers, ("hidden",))
    predictions = generate(model, tokenizer, prompts, max_new_tokens, batch_size, capture=capture)
    acts = {layer: value for (_, layer), value in capture.result().items()}
    whole = weighting == "code"
    first_c = [a[0] for a in context_answers]
    first_m = [a[0] for a in memory_answers]
    loss_c = answer_losses(model, tokenizer, prompts, first_c, whole, batch_size).numpy()
    loss_m = answer_losses(model, tokenizer, prompts, first_m, whole, batch_size).numpy()
    if grouping == "em":
        label = behaviour_labels(predictions, context_answers, memory_answers)
    else:
        label = (loss_c < loss_m).astype(int)
    return Collected(acts, predictions, label, loss_c, loss_m)


def layer_vectors(collected: Collected, sae: SparseAutoencoder, layer: int, K: float, weighting: str, code: str,
                  seed: int, mi: np.ndarray | None = None, n_jobs: int = 1) -> FunctionalVectors:
    """z_C and z_M of one layer from the collected groups, through that layer's SAE."""
    is_c, is_m = collected.label == 1, collected.label == 0
    if not is_c.any() or not is_m.any():
        raise ValueError(f"layer {layer}: need both behaviours, got {is_c.sum()} context and {is_m.sum()} memory "
                         "samples; collect more prompts or use spare.grouping=loglik")
    with torch.no_grad():
        Z = sae.code(collected.acts[layer].to(sae.W_enc.device), code).float().cpu().numpy()
    w_C = confidence_weights(collected.loss_context[is_c], collected.loss_memory[is_c], weighting)
    w_M = confidence_weights(collected.loss_memory[is_m], collected.loss_context[is_m], weighting)
    return functional_vectors(Z[is_c], Z[is_m], K, w_C, w_M, mi=mi, seed=seed, n_jobs=n_jobs)


def group_means(collected: Collected, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean hidden state of the context and of the memory group (ActAdd, TaskVec)."""
    return collected.group(layer, 1).mean(0), collected.group(layer, 0).mean(0)

"""Linear probes of thesis 5.1.7 / 5.3.2: P(y = 1 | x) = sigmoid(x W + b), loss BCE + lambda ||W||_1
(the authors' code penalises the bias too; `penalise_bias`), Adam lr 0.002, StepLR gamma 0.95 per
epoch, batch 64, 20 epochs, the final-epoch model; one probe per (task, kind, layer), several seeds.
Metrics: accuracy at 0.5, AUROC, AUPRC (trapezoid under the precision-recall curve).
Splits are question-disjoint: groups are shuffled with a fixed RandomState and the first
`n_test_groups` groups are the test set.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class ProbeConfig:
    l1: float = 3e-4
    lr: float = 2e-3
    epochs: int = 20
    batch_size: int = 64
    gamma: float = 0.95
    penalise_bias: bool = False


def train_probe(X: np.ndarray, y: np.ndarray, config: ProbeConfig, seed: int) -> torch.nn.Linear:
    generator = torch.Generator().manual_seed(seed)
    torch_X = torch.as_tensor(np.asarray(X), dtype=torch.float32)
    torch_y = torch.as_tensor(np.asarray(y), dtype=torch.float32)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        probe = torch.nn.Linear(torch_X.shape[1], 1)
    optimiser = torch.optim.Adam(probe.parameters(), lr=config.lr)
    schedule = torch.optim.lr_scheduler.StepLR(optimiser, step_size=1, gamma=config.gamma)
    for _ in range(config.epochs):
        order = torch.randperm(len(torch_X), generator=generator)
        for start in range(0, len(order), config.batch_size):
            rows = order[start:start + config.batch_size]
            logits = probe(torch_X[rows]).squeeze(-1)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, torch_y[rows])
            penalty = probe.weight.abs().sum() + (probe.bias.abs().sum() if config.penalise_bias else 0.0)
            optimiser.zero_grad()
            (loss + config.l1 * penalty).backward()
            optimiser.step()
        schedule.step()
    return probe.eval()


@torch.no_grad()
def probe_scores(probe: torch.nn.Linear, X: np.ndarray) -> np.ndarray:
    return torch.sigmoid(probe(torch.as_tensor(np.asarray(X), dtype=torch.float32)).squeeze(-1)).numpy()


def binary_metrics(y: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import auc, precision_recall_curve, roc_auc_score

    y = np.asarray(y).astype(int)
    metrics = {"accuracy": float(np.mean((scores >= 0.5) == y))}
    if len(np.unique(y)) == 2:
        precision, recall, _ = precision_recall_curve(y, scores)
        metrics.update(auroc=float(roc_auc_score(y, scores)), auprc=float(auc(recall, precision)))
    else:
        metrics.update(auroc=float("nan"), auprc=float("nan"))
    return metrics


def group_split(groups: list[str], n_test_groups: int, seed: int = 666) -> tuple[np.ndarray, np.ndarray]:
    """Boolean (train, test) masks over rows; no group is on both sides."""
    names = sorted(set(groups))
    order = np.random.RandomState(seed).permutation(len(names))
    test_names = {names[i] for i in order[:min(n_test_groups, len(names) - 1)]}
    test = np.array([g in test_names for g in groups])
    return ~test, test


def probe_layers(features: dict[tuple[str, int], np.ndarray], y: np.ndarray, train: np.ndarray, test: np.ndarray,
                 config: ProbeConfig, seeds: list[int]) -> list[dict]:
    """Train and test one probe per (kind, layer) and seed; one row per (kind, layer, seed)."""
    rows = []
    for (kind, layer), X in sorted(features.items()):
        for seed in seeds:
            probe = train_probe(X[train], y[train], config, seed)
            rows.append({"kind": kind, "layer": layer, "probe_seed": seed,
                         **binary_metrics(y[test], probe_scores(probe, X[test]))})
    return rows

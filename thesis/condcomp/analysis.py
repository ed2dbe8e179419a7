"""Measurements of Chapter 2's models: accuracy-vs-compute of early exits, expert load of MoEs.

Compute is priced with the core FLOPs counter (1 multiply-add = 1 FLOP) on one sample, then
averaged over the exits or experts each test sample actually used.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from thesis.condcomp.early_exit import MultiExit
from thesis.core.flops import count_flops


def exit_flops(model: MultiExit, example: Tensor) -> list[float]:
    """FLOPs per sample of leaving at each exit: the blocks up to it and every head so far."""
    report = count_flops(model, example[:1])
    blocks = [report.under(f"blocks.{i}") for i in range(len(model.blocks))]
    heads = [report.under(f"heads.{j}") for j in range(len(model.heads))]
    return [sum(blocks[: after + 1]) + sum(heads[: j + 1]) for j, after in enumerate(model.exits_after)]


def _batches(loader: DataLoader) -> tuple[Tensor, Tensor]:
    xs, ys = zip(*loader)
    return torch.cat(xs), torch.cat(ys)


@torch.no_grad()
def early_exit_curve(model: MultiExit, loader: DataLoader, thresholds: Iterable[float],
                     rule: str = "maxprob") -> list[dict[str, object]]:
    """One row per policy setting: confidence thresholds (dynamic) and fixed exits (static).

    Dynamic rows come from `MultiExit.infer`, which really stops computing exited samples;
    FLOPs of a sample are those of its exit, and `flops_fraction` divides by the last exit's.
    """
    model.eval()
    x, y = _batches(loader)
    costs = torch.tensor(exit_flops(model, x), dtype=torch.float64)
    full = float(costs[-1])
    rows: list[dict[str, object]] = []
    for threshold in thresholds:
        logits, exit_index, _ = model.infer(x, threshold, rule=rule)
        flops = costs[exit_index]
        rows.append({"policy": "confidence", "setting": f"{rule}>={threshold:g}", "threshold": threshold,
                     "accuracy": float((logits.argmax(-1) == y).float().mean()),
                     "flops": float(flops.mean()), "flops_fraction": float(flops.mean()) / full,
                     "mean_exit": float(exit_index.float().mean())})
    for j, logits in enumerate(model(x)):
        rows.append({"policy": "static", "setting": f"exit{j}", "threshold": float("nan"),
                     "accuracy": float((logits.argmax(-1) == y).float().mean()),
                     "flops": float(costs[j]), "flops_fraction": float(costs[j]) / full, "mean_exit": float(j)})
    return rows


@torch.no_grad()
def expert_load(model, loader: DataLoader) -> Tensor:
    """Fraction of (token, expert) assignments each expert received over the loader."""
    model.eval()
    counts: Tensor | None = None
    for x, _ in loader:
        _, routing = model(x)
        batch = routing.dispatch.reshape(-1, routing.dispatch.shape[-1]).float().sum(0)
        counts = batch if counts is None else counts + batch
    return counts / counts.sum()


def coefficient_of_variation(load: Tensor) -> float:
    """std / mean of a load vector (0 = perfectly balanced)."""
    return float(load.std(unbiased=False) / load.mean())


def best_saving_within(rows: Sequence[dict[str, object]], max_drop: float) -> dict[str, object]:
    """The cheapest confidence setting whose accuracy is within `max_drop` of the last exit's."""
    final = next(r for r in rows if r["policy"] == "static" and r["flops_fraction"] == 1.0)
    ok = [r for r in rows if r["policy"] == "confidence" and r["accuracy"] >= final["accuracy"] - max_drop]
    return min(ok, key=lambda r: r["flops_fraction"]) if ok else final

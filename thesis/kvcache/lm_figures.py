"""Runner and figures of the Chapter 4 language-modelling experiments: perplexity and next-token
accuracy along the position (thesis Figs. 4.3, 4.6, 4.10-4.13) and final perplexity against the cache
budget (Fig. 4.32).

`evaluate_language_modelling` runs every press of `method.presses` at every budget of
`method.budgets` on every perplexity task of `data.tasks`. A budget is written into the press spec
under `method.budget_field`: `prune_after` for KNorm's schedule (`knorm.PruneAfterPress`, the length
at which the cache is cut to 98 %), `target_size` for `DecodingPress` (the pairs per KV head kept
after every token). A press given as null is the uncompressed model, run once (budget "full").
Sequences of a task are scored `method.batch_size` at a time (they have one length, and presses
keep the same count in every batch row); totals do not depend on it.

Writes `tables/scores.csv` (press, budget, task, metric in nll / perplexity / accuracy, value,
achieved_ratio, cache_bytes), `tables/positions.csv` (press, budget, task, position_bin,
position_end, n_tokens, nll, perplexity, accuracy, cumulative_perplexity, cumulative_accuracy; bins
of `method.bin_size` positions, see `tasks.perplexity.position_rows`), and per task the figures
`<figure>_<task>_ppl` and `_accuracy` (one panel per budget, one curve per press, the full cache
dashed) and, with several budgets, `<figure>_<task>_budget` (total perplexity vs budget per press).
Metrics: `<press>/<budget>/<task>/<metric>`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from thesis.core.errors import ConfigError
from thesis.core.evaluate import progress
from thesis.core.hardware import device_of
from thesis.core.plotting import new_figure, save_figure
from thesis.core.rundir import RunDir
from thesis.kvcache.runner import build_press, load_model
from thesis.kvcache.tasks.base import PerplexityTask
from thesis.kvcache.tasks.perplexity import Scored, compressed_nll, position_rows, totals
from thesis.kvcache.tasks.streaming_perplexity import StreamingLanguageModelingTask, streaming_nll

FULL = "full"


def batches(sequences: list[torch.Tensor], batch_size: int) -> list[torch.Tensor]:
    """Sequences (1, L) stacked `batch_size` at a time."""
    return [torch.cat(sequences[i:i + batch_size]) for i in range(0, len(sequences), batch_size)]


def settings(cfg: DictConfig) -> list[tuple[str, int | str]]:
    """(press name, budget) pairs: each press at each budget, the uncompressed one once."""
    return [(name, budget) for name, spec in cfg.method.presses.items()
            for budget in ([FULL] if spec is None else cfg.method.budgets)]


def press_at(spec: Any, field: str, budget: int) -> dict[str, Any]:
    """The press spec with its budget field set."""
    spec = OmegaConf.to_container(spec, resolve=True)
    if field not in {f.name for f in dataclasses.fields(get_class(spec["_target_"]))}:
        raise ConfigError(f"method.budget_field={field!r} is not a field of press {spec.get('_target_')}: use "
                          "prune_after for knorm.PruneAfterPress or target_size for DecodingPress")
    return {**spec, field: budget}


def score_rows(press: str, budget: int | str, task: str, scored: list[Scored]) -> list[dict[str, Any]]:
    achieved = sum(s.stats.achieved_ratio for s in scored) / len(scored)
    cache_bytes = sum(s.stats.cache_bytes for s in scored) / len(scored)
    return [{"press": press, "budget": budget, "task": task, "metric": metric, "value": value,
             "achieved_ratio": achieved, "cache_bytes": cache_bytes}
            for metric, value in totals(scored).items()]


def evaluate_language_modelling(cfg: DictConfig, run: RunDir) -> dict[str, float]:
    model, tokenizer = load_model(cfg.model, device_of(cfg.hardware))
    device = next(model.parameters()).device
    tasks = [instantiate(spec, name=name) for name, spec in cfg.data.tasks.items()]
    for task in tasks:
        if not isinstance(task, PerplexityTask):
            raise ConfigError(f"data.tasks.{task.name} is not a perplexity task; this runner scores "
                              "language modelling only")
    inputs = {task.name: batches(task.sequences(tokenizer), cfg.method.batch_size) for task in tasks}
    filters: dict[str, torch.Tensor] = {}
    scores, positions = [], []
    for name, budget in progress(settings(cfg), desc="presses x budgets"):
        spec = cfg.method.presses[name]
        press = None if spec is None else build_press(press_at(spec, cfg.method.budget_field, budget), 0.0,
                                                      model, filters)
        for task in tasks:
            nll_of = streaming_nll if isinstance(task, StreamingLanguageModelingTask) else compressed_nll
            scored = [nll_of(model, ids.to(device), task.context_length, press) for ids in inputs[task.name]]
            scores.extend(score_rows(name, budget, task.name, scored))
            positions.extend({"press": name, "budget": budget, "task": task.name, **row}
                             for row in position_rows(scored, task.context_length, cfg.method.bin_size))
    run.write_table("scores", scores)
    run.write_table("positions", positions)
    positions_frame = pd.DataFrame(positions)
    for task in tasks:
        along_position(positions_frame[positions_frame.task == task.name], run.path, f"{cfg.method.figure}_{task.name}")
        if len(cfg.method.budgets) > 1:
            scores_frame = pd.DataFrame(scores)
            against_budget(scores_frame[scores_frame.task == task.name], run.path,
                           f"{cfg.method.figure}_{task.name}_budget")
    return {f"{row['press']}/{row['budget']}/{row['task']}/{row['metric']}": row["value"] for row in scores}


def along_position(positions: pd.DataFrame, out: Path, figure_id: str) -> None:
    """Per-bin perplexity and accuracy against the position, one panel per budget (Figs. 4.3, 4.6)."""
    full = positions[positions.budget == FULL]
    budgets = [b for b in positions.budget.unique() if b != FULL] or [FULL]
    for metric, label in (("perplexity", "perplexity"), ("accuracy", "next-token accuracy")):
        fig, axes = new_figure(4.0 * len(budgets), 3.2, ncols=len(budgets))
        for ax, budget in zip(axes if len(budgets) > 1 else [axes], budgets):
            for press, part in positions[positions.budget == budget].groupby("press"):
                ax.plot(part.position_bin, part[metric], marker=".", label=press)
            if len(full) and budget != FULL:
                ax.plot(full.position_bin, full[metric], "k--", label="full cache")
            ax.set_title(f"budget {budget}")
            ax.set_xlabel("position (bin start)")
            ax.set_ylabel(label)
            if metric == "perplexity":
                ax.set_yscale("log")
            ax.legend(fontsize=7)
        save_figure(fig, out, f"{figure_id}_{'ppl' if metric == 'perplexity' else metric}")


def against_budget(scores: pd.DataFrame, out: Path, figure_id: str) -> None:
    """Total perplexity against the cache budget, one curve per press (Fig. 4.32)."""
    ppl = scores[scores.metric == "perplexity"]
    fig, ax = new_figure(5.0, 3.4)
    for press, part in ppl[ppl.budget != FULL].groupby("press"):
        part = part.assign(budget=part.budget.astype(float)).sort_values("budget")
        ax.plot(part.budget, part.value, marker="o", label=press)
    full = ppl[ppl.budget == FULL]
    if len(full):
        ax.axhline(float(full.value.iloc[0]), color="k", linestyle="--", label="full cache")
    budgets = ppl[ppl.budget != FULL].budget.astype(float)
    if len(budgets) and budgets.min() > 1:
        ax.set_xscale("log", base=2)
    ax.set_xlabel("cache budget")
    ax.set_ylabel("perplexity")
    ax.legend(fontsize=7)
    save_figure(fig, out, figure_id)

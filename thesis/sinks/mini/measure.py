"""Decode held-out prompts under `SinkCapture` and reduce each batch at once to the miniature's
measurements (spec B.7 (b) 1-4), so nothing grows with prompts x steps x S x S.

Per decode the capture keeps every key's score (keep = S) at top-K = 0, or only the masked keys'
at top-K > 0, where only exact match is measured. `SinkStats` accumulates, over batches:
- sink prevalence: share of (prompt, step, layer, head) with at least one Eq. 5.16 sink, and per
  (layer, head) that share and the mean score of the main sink (the top key) (Fig. 5.54);
- the eps sweep: share of keys that are not sinks for each eps (Fig. 5.59);
- main-sink trajectories per (prompt, layer, head): move / appear / vanish rates
  (`thesis.sinks.detection.main_sink_moves`), and the first prompt's per head, for Fig. 5.56;
- the token under each sink vs all tokens (punctuation / EOS, MASK, BOS, PAD);
- per main sink: step, position and the rightmost still-masked position (Dream's positional sinks,
  the drift of the main sink over steps).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import fmean

import numpy as np
import torch
from omegaconf import DictConfig
from scipy.stats import spearmanr

from thesis.sinks.capture import LayerStats, SinkCapture
from thesis.sinks.decoding import autoregressive_generate, diffusion_generate
from thesis.sinks.detection import is_sink, main_sink_moves
from thesis.sinks.mini.corpus import BOS, MASK, PAD, SEMANTIC, exact_match
from thesis.sinks.mini.model import logits_fn

TOKEN_KINDS = {"semantic": lambda ids: torch.isin(ids, torch.tensor(sorted(SEMANTIC), device=ids.device)),
               "mask": lambda ids: ids == MASK, "bos": lambda ids: ids == BOS, "pad": lambda ids: ids == PAD}


def decode(model, mode: str, decoder: DictConfig, prompts: torch.Tensor, gen_length: int, steps: int,
           capture: SinkCapture, seen: dict[int, torch.Tensor]) -> torch.Tensor:
    """Generate the responses of `prompts` with `mode`'s decoder under `capture`; `seen[step]` holds
    the ids each step's forward pass read."""
    def on_step(step: int, ids: torch.Tensor) -> None:
        capture.begin_step(step)
        seen[step] = ids.clone()

    with capture:
        if decoder.kind == "autoregressive":
            ids = autoregressive_generate(logits_fn(model, mode), prompts, gen_length, on_step)
        else:
            ids = diffusion_generate(logits_fn(model, mode), prompts, MASK, gen_length, decoder.block_length,
                                     steps, decoder.shift, on_step)
    return ids[:, prompts.shape[1]:]


def rightmost_mask(ids: torch.Tensor) -> torch.Tensor:
    """(B,) position of the last MASK of each row, -1 where none is left."""
    positions = torch.arange(ids.shape[1], device=ids.device).expand_as(ids)
    return positions.masked_fill(ids != MASK, -1).max(dim=1).values


@dataclass
class SinkStats:
    """Running sums over the batches of one (model, decoder) at top-K = 0."""

    layers: int
    heads: int
    eps: float
    eps_grid: list[float]
    cells: int = 0
    cells_with_sink: int = 0
    head_sink: np.ndarray = None
    head_main_score: np.ndarray = None
    head_cells: np.ndarray = None
    keys: int = 0
    keys_sink: np.ndarray = None
    move: list[float] = field(default_factory=list)
    appear: list[float] = field(default_factory=list)
    vanish: list[float] = field(default_factory=list)
    sinks_by_kind: dict[str, int] = field(default_factory=dict)
    tokens_by_kind: dict[str, int] = field(default_factory=dict)
    n_sink_tokens: int = 0
    n_tokens: int = 0
    main: list[np.ndarray] = field(default_factory=list)  # rows: layer, head, step, position, rightmost mask
    trace: dict[tuple[int, int], list[int | None]] = field(default_factory=dict)  # first prompt, per head

    def __post_init__(self) -> None:
        shape = (self.layers, self.heads)
        self.head_sink, self.head_main_score, self.head_cells = np.zeros(shape), np.zeros(shape), np.zeros(shape)
        self.keys_sink = np.zeros(len(self.eps_grid))
        for kind in TOKEN_KINDS:
            self.sinks_by_kind.setdefault(kind, 0)
            self.tokens_by_kind.setdefault(kind, 0)

    def add(self, records: list[LayerStats], seen: dict[int, torch.Tensor]) -> None:
        paths: dict[tuple[int, int, int], list[int | None]] = {}
        for record in records:
            ids = seen[record.step]
            self._add_cells(record)
            self._add_sweep(record)
            self._add_tokens(record, ids)
            main = torch.where(record.sink[..., 0], record.positions[..., 0], -1)  # (B, H)
            rightmost = rightmost_mask(ids)
            for b, row in enumerate(main.tolist()):
                for h, position in enumerate(row):
                    paths.setdefault((b, record.layer, h), []).append(position if position >= 0 else None)
            has = main >= 0
            b_index, h_index = has.nonzero(as_tuple=True)
            self.main.append(np.stack([np.full(len(b_index), record.layer), h_index.cpu().numpy(),
                                       np.full(len(b_index), record.step), main[has].cpu().numpy(),
                                       rightmost[b_index].cpu().numpy()], axis=1))
        for (b, layer, head), path in paths.items():
            rates = main_sink_moves(path)
            for name, values in (("move_rate", self.move), ("appear_rate", self.appear), ("vanish_rate", self.vanish)):
                if not math.isnan(rates[name]):
                    values.append(rates[name])
            if b == 0:
                self.trace.setdefault((layer, head), path)

    def _add_cells(self, record: LayerStats) -> None:
        has = (record.n_sinks > 0).float()
        self.cells += has.numel()
        self.cells_with_sink += int(has.sum())
        self.head_sink[record.layer] += has.sum(dim=0).cpu().numpy()
        self.head_main_score[record.layer] += record.scores[..., 0].sum(dim=0).cpu().numpy()
        self.head_cells[record.layer] += has.shape[0]

    def _add_sweep(self, record: LayerStats) -> None:
        n_keys = record.scores.shape[-1]
        for i, eps in enumerate(self.eps_grid):  # all keys are kept (keep = S), so these are exact
            self.keys_sink[i] += int(is_sink(record.scores, eps).sum())
        self.keys += record.scores[..., 0].numel() * n_keys

    def _add_tokens(self, record: LayerStats, ids: torch.Tensor) -> None:
        tokens = ids[:, None, :].expand(-1, record.positions.shape[1], -1).gather(-1, record.positions)
        sink_tokens = tokens[record.sink]
        self.n_sink_tokens += sink_tokens.numel()
        self.n_tokens += ids.numel() * record.positions.shape[1]
        for kind, select in TOKEN_KINDS.items():
            self.sinks_by_kind[kind] += int(select(sink_tokens).sum())
            self.tokens_by_kind[kind] += int(select(ids).sum()) * record.positions.shape[1]

    def main_sinks(self) -> np.ndarray:
        return np.concatenate(self.main) if self.main else np.zeros((0, 5), dtype=int)

    def summary(self) -> dict[str, float]:
        nan = float("nan")
        out = {"sink_prevalence": self.cells_with_sink / self.cells if self.cells else nan,
               "move_rate": fmean(self.move) if self.move else nan,
               "appear_rate": fmean(self.appear) if self.appear else nan,
               "vanish_rate": fmean(self.vanish) if self.vanish else nan,
               "non_sink_share": 1 - self.keys_sink[self.eps_grid.index(self.eps)] / self.keys if self.keys else nan}
        for kind in TOKEN_KINDS:
            sink_share = self.sinks_by_kind[kind] / self.n_sink_tokens if self.n_sink_tokens else nan
            token_share = self.tokens_by_kind[kind] / self.n_tokens
            out[f"sink_share/{kind}"] = sink_share
            out[f"token_share/{kind}"] = token_share
            out[f"enrichment/{kind}"] = sink_share / token_share if token_share else nan
        main = self.main_sinks()
        out["main_at_position0"] = float((main[:, 3] == 0).mean()) if len(main) else nan
        out["drift_rho"] = spearman(main[:, 2], main[:, 3])
        with_mask = main[main[:, 4] >= 0]
        out["rightmost_mask_rho"] = spearman(with_mask[:, 3], with_mask[:, 4])
        for layer in range(self.layers):
            part = with_mask[with_mask[:, 0] == layer]
            out[f"layer{layer}/rightmost_mask_rho"] = spearman(part[:, 3], part[:, 4])
        return out

    def head_rows(self, name: str) -> list[dict]:
        return [{"model": name, "layer": layer, "head": head,
                 "sink_prevalence": self.head_sink[layer, head] / self.head_cells[layer, head],
                 "main_score": self.head_main_score[layer, head] / self.head_cells[layer, head]}
                for layer in range(self.layers) for head in range(self.heads) if self.head_cells[layer, head]]

    def sweep_rows(self, name: str) -> list[dict]:
        return [{"model": name, "eps": eps, "non_sink_share": 1 - count / self.keys}
                for eps, count in zip(self.eps_grid, self.keys_sink) if self.keys]


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rho, NaN with fewer than 3 points or a constant variable."""
    if len(x) < 3 or np.all(x == x[0]) or np.all(y == y[0]):
        return float("nan")
    return float(spearmanr(x, y).statistic)


def evaluate(model, mode: str, decoder: DictConfig, eval_set: dict[str, torch.Tensor], prompt_length: int,
             method: DictConfig, topk: int, stats: SinkStats | None, device: torch.device) -> dict[str, tuple[int, int]]:
    """Decode every held-out prompt (all tasks batched together) with the top-`topk` sinks masked;
    returns (hits, n) per task and feeds `stats` (top-K = 0 only)."""
    sequences = torch.cat(list(eval_set.values()))
    tasks = [task for task, rows in eval_set.items() for _ in range(len(rows))]
    hits = []
    for start in range(0, len(sequences), method.eval_batch):
        prompts = sequences[start:start + method.eval_batch, :prompt_length].to(device)
        keep = sequences.shape[1] if stats is not None else max(topk, 1)
        capture = SinkCapture(keep=keep, topk=topk, eps=method.eps, score=method.score, require_eps=method.require_eps)
        seen: dict[int, torch.Tensor] = {}
        response = decode(model, mode, decoder, prompts, sequences.shape[1] - prompt_length, method.steps, capture, seen)
        hits += exact_match(prompts.cpu(), response.cpu()).tolist()
        if stats is not None:
            stats.add(capture.records, seen)
    return {task: (sum(h for h, t in zip(hits, tasks) if t == task), tasks.count(task)) for task in eval_set}

"""Early exits (dynamic depth, eqs. 2.13-2.15) and differentiable branching (eqs. 2.16-2.17)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from thesis.condcomp.record import ComputeRecord

ExitRule = Literal["maxprob", "entropy"]


class MultiExit(nn.Module):
    """Backbone f_b ∘ ... ∘ f_1 (eq. 2.13) with exit classifiers y_i = c_i ∘ f_i ∘ ... ∘ f_1 (eq. 2.14).

    `exits_after[j]` is the (0-based) block after which head j sits; by default one head after every
    block. The last head must sit after the last block: it is the full network's classifier f(x).
    `forward` returns the list of per-exit logits (training, eq. 2.15); `infer` stops computing each
    sample at its first confident exit.
    """

    def __init__(self, blocks: Sequence[nn.Module], heads: Sequence[nn.Module],
                 exits_after: Sequence[int] | None = None):
        super().__init__()
        exits_after = list(range(len(blocks))) if exits_after is None else list(exits_after)
        if len(exits_after) != len(heads) or exits_after != sorted(set(exits_after)):
            raise ValueError("need one strictly increasing block index per head")
        if exits_after[-1] != len(blocks) - 1:
            raise ValueError("the last head must follow the last block")
        self.blocks = nn.ModuleList(blocks)
        self.heads = nn.ModuleList(heads)
        self.exits_after = exits_after

    @property
    def exit_costs(self) -> list[float]:
        """Fraction of backbone blocks executed when leaving at each exit (for the FLOPs accountant)."""
        return [(i + 1) / len(self.blocks) for i in self.exits_after]

    def forward(self, x: Tensor) -> list[Tensor]:
        outputs = []
        head_of = dict(zip(self.exits_after, self.heads))
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in head_of:
                outputs.append(head_of[i](x))
        return outputs

    @torch.no_grad()
    def infer(self, x: Tensor, threshold: float, rule: ExitRule = "maxprob") -> tuple[Tensor, Tensor, ComputeRecord]:
        """Confidence-based early exit that really skips the remaining blocks of exited samples.

        Same decisions as `confidence_exit(self(x), ...)`; returns (logits, exit index, record).
        """
        head_of = dict(zip(self.exits_after, range(len(self.heads))))
        alive = torch.arange(x.shape[0], device=x.device)
        logits: Tensor | None = None
        exit_index = torch.full((x.shape[0],), len(self.heads) - 1, dtype=torch.long, device=x.device)
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i not in head_of:
                continue
            j = head_of[i]
            out = self.heads[j](x)
            if logits is None:
                logits = out.new_zeros((exit_index.shape[0],) + out.shape[1:])
            leave = _confident(out, threshold, rule) | (j == len(self.heads) - 1)
            logits[alive[leave]] = out[leave]
            exit_index[alive[leave]] = j
            alive, x = alive[~leave], x[~leave]
            if alive.numel() == 0:
                break
        costs = torch.tensor(self.exit_costs, device=exit_index.device)
        return logits, exit_index, ComputeRecord(fraction=costs[exit_index], unit="sample")


def multi_exit_loss(logits: Sequence[Tensor], target: Tensor, alpha: float = 1.0,
                    betas: Sequence[float] | None = None) -> Tensor:
    """L = α CE(y, f(x)) + Σ_{i<b} β_i CE(y, y_i(x)) (eq. 2.15); `logits[-1]` is f(x).

    `betas` defaults to 1 for every early exit; with all β_i = 0 and α = 1 it is the plain CE.
    """
    betas = [1.0] * (len(logits) - 1) if betas is None else list(betas)
    if len(betas) != len(logits) - 1:
        raise ValueError("need one beta per early exit (all heads but the last)")
    loss = alpha * F.cross_entropy(logits[-1], target)
    for beta, y in zip(betas, logits[:-1]):
        loss = loss + beta * F.cross_entropy(y, target)
    return loss


def _confident(logits: Tensor, threshold: float, rule: ExitRule) -> Tensor:
    probs = logits.softmax(-1)
    if rule == "maxprob":
        return probs.max(-1).values >= threshold
    if rule == "entropy":
        entropy = -(probs * probs.clamp_min(1e-12).log()).sum(-1)
        return entropy <= threshold
    raise ValueError(f"unknown rule {rule!r}")


def confidence_exit(logits: Sequence[Tensor], threshold: float, rule: ExitRule = "maxprob",
                    costs: Sequence[float] | None = None) -> tuple[Tensor, Tensor, ComputeRecord]:
    """Per-sample exit at the first head whose max-prob ≥ threshold (or entropy ≤ threshold).

    Heuristic inference rule of Sec. 2.0.2; the last head always accepts. maxprob with threshold 0
    exits every sample at the first head, threshold > 1 at the last. `costs[i]` is the executed
    fraction when leaving at exit i (default (i+1)/#exits, e.g. `MultiExit.exit_costs`).
    Returns (chosen logits, exit index, per-sample ComputeRecord).
    """
    stacked = torch.stack(list(logits))  # (E, B, C)
    accept = torch.stack([_confident(y, threshold, rule) for y in logits])
    accept[-1] = True
    exit_index = accept.float().argmax(0)  # first accepting head
    chosen = stacked[exit_index, torch.arange(stacked.shape[1], device=stacked.device)]
    costs = [(i + 1) / len(logits) for i in range(len(logits))] if costs is None else list(costs)
    fraction = torch.tensor(costs, device=exit_index.device)[exit_index]
    return chosen, exit_index, ComputeRecord(fraction=fraction, unit="sample")


def stick_breaking(gates: Tensor) -> Tensor:
    """Exit probabilities Γ of eq. 2.17 plus the leftover mass for the final classifier.

    `gates` (B, b−1) holds γ_1..γ_{b−1}; returns (B, b) with entry i = γ_i Π_{j<i}(1 − γ_j) and last
    entry Π_{j<b}(1 − γ_j). Rows sum to one.
    """
    ones = torch.ones_like(gates[:, :1])
    survive = torch.cumprod(torch.cat([ones, 1 - gates], dim=1), dim=1)  # Π_{j<i}(1 − γ_j), i = 1..b
    return torch.cat([gates, ones], dim=1) * survive


def branching_mixture(outputs: Sequence[Tensor], gates: Tensor) -> Tensor:
    """Recursive soft output ỹ_1 of eq. 2.16: ỹ_i = γ_i y_i + (1 − γ_i) ỹ_{i+1}, ỹ_b = y_b.

    `outputs` are y_1..y_b, each (B, C); `gates` (B, b−1). Equals Σ_i Γ_i y_i + leftover · y_b.
    """
    mixed = outputs[-1]
    for i in range(len(outputs) - 2, -1, -1):
        g = gates[:, i : i + 1]
        mixed = g * outputs[i] + (1 - g) * mixed
    return mixed


class DifferentiableBranching(nn.Module):
    """Early-exit network with trainable exit gates γ_i(x) (eqs. 2.16-2.17, Scardapane et al. [521]).

    One block, one classifier head and (except after the last block) one gate head per stage; γ_i =
    sigmoid(gate_i(h_i)). Training output: the recursive mixture of the per-exit class probabilities
    (a valid distribution; train with NLL on its log). Inference: exit at the first γ_i ≥ 0.5.
    """

    def __init__(self, blocks: Sequence[nn.Module], heads: Sequence[nn.Module], gate_heads: Sequence[nn.Module]):
        super().__init__()
        if not len(blocks) == len(heads) == len(gate_heads) + 1:
            raise ValueError("need b blocks, b heads and b-1 gate heads")
        self.blocks = nn.ModuleList(blocks)
        self.heads = nn.ModuleList(heads)
        self.gate_heads = nn.ModuleList(gate_heads)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, list[Tensor]]:
        """Returns (mixture of class probabilities, exit probabilities (B, b), per-exit logits)."""
        logits, gates = [], []
        for i, (block, head) in enumerate(zip(self.blocks, self.heads)):
            x = block(x)
            logits.append(head(x))
            if i < len(self.gate_heads):
                gates.append(torch.sigmoid(self.gate_heads[i](x)).reshape(-1))
        gate = torch.stack(gates, dim=1)
        mixture = branching_mixture([y.softmax(-1) for y in logits], gate)
        return mixture, stick_breaking(gate), logits

    @torch.no_grad()
    def infer(self, x: Tensor) -> tuple[Tensor, Tensor, ComputeRecord]:
        """Hard exits: γ_i thresholded at 0.5; exited samples skip the remaining blocks.

        Returns (logits at the exit, exit index, per-sample ComputeRecord of executed blocks).
        """
        n = x.shape[0]
        alive = torch.arange(n, device=x.device)
        exit_index = torch.full((n,), len(self.blocks) - 1, dtype=torch.long, device=x.device)
        logits: Tensor | None = None
        for i, (block, head) in enumerate(zip(self.blocks, self.heads)):
            x = block(x)
            if i < len(self.gate_heads):
                leave = torch.sigmoid(self.gate_heads[i](x)).reshape(-1) >= 0.5
            else:
                leave = torch.ones_like(alive, dtype=torch.bool)
            out = head(x[leave])  # only exiting samples need their classifier
            if logits is None:
                logits = out.new_zeros((n,) + out.shape[1:])
            logits[alive[leave]] = out
            exit_index[alive[leave]] = i
            alive, x = alive[~leave], x[~leave]
            if alive.numel() == 0:
                break
        fraction = (exit_index + 1).float() / len(self.blocks)
        return logits, exit_index, ComputeRecord(fraction=fraction, unit="sample")

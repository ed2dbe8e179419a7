"""Fine-tuning schedules: each one decides, step by step, which blocks train and how many tokens flow.

One small class per method of the thesis's comparison (Tables 3.2-3.8), all with the same two
calls: `plan()` before a step gives its `StepPlan`, `observe(record)` after it sees what the step
measured. ALaST is the adaptive one; the baselines are fixed schedules:

| method (thesis row) | schedule |
| --- | --- |
| FT full | `StaticSchedule(blocks="all", train_stem=True)` |
| FT head | `StaticSchedule(blocks="none")` |
| FT top-3 | `StaticSchedule(blocks="relmag", count=3)` (or `"last"`) |
| BSR | `StaticSchedule(blocks="relmag", count=6, keep={3: 0.7, 6: 0.7, 9: 0.7})` |
| token dropping without layer selection (EViT) | `StaticSchedule(blocks="all", keep={3: 0.7, ...})` |
| ToMe | `StaticSchedule(blocks="all", train_stem=True, merge=r)`: r tokens merged in every block |
| LoRA / LoRA + ALaST | `StaticSchedule("all")` / `ALaSTSchedule`, with adapters (`thesis.alast.lora`) |
| ALaST | `ALaSTSchedule(k=9, ...)` |

`eval_plan()` says how the model runs at evaluation: the full model (None) for every method
except ToMe, which by default merges at evaluation too (`merge_at_eval`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from thesis.alast.budget import LayerBudgets
from thesis.alast.importance import relative_magnitude
from thesis.alast.vit import ForwardRecord, StepPlan

SAMPLERS = ("multinomial", "topk", "uniform")
K_MEANINGS = ("trainable", "frozen")
STATIC_BLOCKS = ("all", "none", "last", "relmag")


class Schedule(nn.Module):
    """Base: a plan per step. `setup` learns the depth when the module is built (state that a
    checkpoint must restore lives from then on); `bind` sees the model and one batch before training."""

    num_layers: int = 0

    def setup(self, num_layers: int) -> None:
        self.num_layers = num_layers

    def bind(self, model: nn.Module, images: Tensor) -> None:
        """Choices that need data (e.g. ranking blocks on a batch); none by default."""

    def plan(self) -> StepPlan:
        raise NotImplementedError

    def eval_plan(self) -> StepPlan | None:
        """How evaluation runs; None: the full model, every token."""
        return None

    def observe(self, record: ForwardRecord) -> None:
        """Called after every training step with what it measured."""


class StaticSchedule(Schedule):
    """The same trainable blocks and token-keep fractions at every step.

    `blocks`: "all", "none", "last" (the last `count`), "relmag" (the `count` blocks with the
    largest relative magnitude on the first batch, Fig. 3.12) or a list of block indices.
    `keep`: {block index: fraction of tokens kept}; other blocks keep everything.
    `merge`: ToMe's r, tokens merged in every block (an int) or per block (a list); 0: none.
    `merge_at_eval`: merge at evaluation too (ToMe fine-tunes and evaluates with the same r).
    `proportional_attention`: ToMe's log-size term in the attention logits of merged sequences.
    """

    def __init__(self, blocks: str | Sequence[int] = "all", count: int = 3,
                 keep: Mapping[int, float] | None = None, train_stem: bool = False,
                 merge: int | Sequence[int] = 0, merge_at_eval: bool = True, proportional_attention: bool = True):
        super().__init__()
        if isinstance(blocks, str) and blocks not in STATIC_BLOCKS:
            raise ValueError(f"blocks must be one of {STATIC_BLOCKS} or a list of block indices, got {blocks!r}")
        self.blocks = blocks if isinstance(blocks, str) else [int(b) for b in blocks]
        self.count = count
        self.keep = {int(k): float(v) for k, v in (keep or {}).items()}
        self.train_stem = train_stem
        self.merge = int(merge) if isinstance(merge, int) else [int(r) for r in merge]
        if min([self.merge] if isinstance(self.merge, int) else self.merge, default=0) < 0:
            raise ValueError(f"merge counts must be >= 0, got {merge!r}")
        self.merge_at_eval, self.proportional_attention = merge_at_eval, proportional_attention
        self.chosen: list[int] = []

    def setup(self, num_layers: int) -> None:
        super().setup(num_layers)
        if not isinstance(self.merge, int) and len(self.merge) != num_layers:
            raise ValueError(f"merge lists {len(self.merge)} counts for a model of {num_layers} blocks")

    def _merge_counts(self) -> tuple[int, ...]:
        counts = [self.merge] * self.num_layers if isinstance(self.merge, int) else self.merge
        return tuple(counts) if any(counts) else ()

    def bind(self, model: nn.Module, images: Tensor) -> None:
        L = self.num_layers
        if self.blocks == "all":
            self.chosen = list(range(L))
        elif self.blocks == "none":
            self.chosen = []
        elif self.blocks == "last":
            self.chosen = list(range(max(0, L - self.count), L))
        elif self.blocks == "relmag":
            ranking = relative_magnitude(model, images).argsort(descending=True)
            self.chosen = sorted(int(i) for i in ranking[: self.count])
        else:
            self.chosen = list(self.blocks)
        bad = [b for b in [*self.chosen, *self.keep] if not 0 <= b < L]
        if bad:
            raise ValueError(f"block indices {bad} outside the model's {L} blocks")

    def plan(self) -> StepPlan:
        trainable = tuple(i in self.chosen for i in range(self.num_layers))
        keep = tuple(self.keep.get(i, 1.0) for i in range(self.num_layers))
        return StepPlan(trainable, keep, self.train_stem, self._merge_counts(), self.proportional_attention)

    def eval_plan(self) -> StepPlan | None:
        merge = self._merge_counts()
        if not (merge and self.merge_at_eval):
            return None
        L = self.num_layers
        return StepPlan((False,) * L, (1.0,) * L, False, merge, self.proportional_attention)


def sample_layers(budget: Tensor, count: int, how: str = "multinomial",
                  generator: torch.Generator | None = None) -> Tensor:
    """Indices of `count` distinct layers: drawn with probability proportional to the budgets
    ("multinomial", the thesis), the `count` largest budgets ("topk"), or uniformly ("uniform")."""
    if how == "multinomial":
        return torch.multinomial(budget.float().clamp_min(1e-6), count, replacement=False, generator=generator)
    if how == "topk":
        return budget.topk(count).indices
    if how == "uniform":
        return torch.randperm(len(budget), generator=generator, device=budget.device)[:count]
    raise ValueError(f"sample must be one of {SAMPLERS}, got {how!r}")


class ALaSTSchedule(Schedule):
    """ALaST (thesis Sec. 3.2.3): budgets from class-token deltas pick K trainable layers and the
    fraction of tokens each layer keeps.

    - `k`: layers trained per step; `k_counts="frozen"` reads it as the number frozen instead (the
      text says both; Table 3.7 counts trainable blocks).
    - `sample`: "multinomial" (thesis: K layers without replacement, probability proportional to
      budget), "topk" (the text's "K layers with the highest budgets"), "uniform" (ablation).
    - `min_budget`: floor applied to the budget when it sets a token count (0 = the thesis).
    - `drop_tokens` / `select_layers`: switch either axis off (ablations).
    """

    def __init__(self, k: int = 9, budget_lr: float = 1e-4, delta_norm: str = "none", min_budget: float = 0.0,
                 sample: str = "multinomial", k_counts: str = "trainable", drop_tokens: bool = True,
                 select_layers: bool = True, train_stem: bool = False):
        super().__init__()
        if sample not in SAMPLERS:
            raise ValueError(f"sample must be one of {SAMPLERS}, got {sample!r}")
        if k_counts not in ("trainable", "frozen"):
            raise ValueError(f"k_counts must be one of {K_MEANINGS}, got {k_counts!r}")
        self.k, self.budget_lr, self.delta_norm = k, budget_lr, delta_norm
        self.min_budget, self.sample, self.k_counts = min_budget, sample, k_counts
        self.drop_tokens, self.select_layers, self.train_stem = drop_tokens, select_layers, train_stem
        self.budgets: LayerBudgets | None = None

    def setup(self, num_layers: int) -> None:
        super().setup(num_layers)
        self.budgets = LayerBudgets(num_layers, self.budget_lr, self.delta_norm)

    @property
    def trainable_count(self) -> int:
        k = min(self.k, self.num_layers)
        return k if self.k_counts == "trainable" else self.num_layers - k

    def plan(self) -> StepPlan:
        budget = self.budgets.budget
        L = self.num_layers
        if self.select_layers:
            chosen = set(sample_layers(budget, self.trainable_count, self.sample).tolist())
        else:
            chosen = set(range(L))
        keep = budget.clamp_min(self.min_budget).tolist() if self.drop_tokens else [1.0] * L
        return StepPlan(tuple(i in chosen for i in range(L)), tuple(keep), self.train_stem)

    def observe(self, record: ForwardRecord) -> None:
        self.budgets.update(record.delta)

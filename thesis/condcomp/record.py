"""Compute records: what fraction of a primitive's work was actually executed.

Every primitive that can skip work (tokens, blocks, layers, experts) returns one of these next to
its output, so a single FLOPs accountant can price any conditional method as
`static cost + sum over units of fraction * unit cost` (spec A.7 / B.4).
Modules that decide what to skip return (output, ComputeRecord); plain tensor operations
(`mask_rows`, `token_drop`, `token_merge`) do not, their cost shows in the output's shape or mask,
which `record_from_mask` turns into a record.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import Tensor


@dataclass
class ComputeRecord:
    """Executed fraction of a primitive's full (dense) cost, one value per sample or per token.

    `fraction` has shape (B,) for unit "sample" or (B, N) / (n_tok,) for unit "token"; values lie in
    [0, 1] (1 = the dense computation was run for that unit). Values are detached.
    """

    fraction: Tensor
    unit: Literal["sample", "token"]

    def mean(self) -> float:
        """Average executed fraction over all units (the number a FLOPs accountant multiplies)."""
        return float(self.fraction.float().mean())


def record_from_mask(mask: Tensor, unit: Literal["sample", "token"] = "token") -> ComputeRecord:
    """Record of a binary keep-mask: kept units count 1, dropped units 0 (Γ of eq. 2.3)."""
    return ComputeRecord(fraction=(mask.detach() != 0).float(), unit=unit)

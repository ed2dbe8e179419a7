"""Evaluation of ACM-ized models: accuracy, FLOPs per sample, realised compute, compute maps.

FLOPs are counted on what actually runs in eval mode (each token's chosen learners, every gate,
everything that is not an ACM), so the mean per sample is exact; per-token compute maps give the
fraction of the ACMs' learner cost each token used (thesis Figs. 3.2, 3.7).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from thesis.acm.convert import acms
from thesis.core.evaluate import progress
from thesis.core.flops import FlopCounter


def token_compute(model: nn.Module) -> Tensor:
    """(B, S) fraction of the ACMs' learner cost each token ran in the last forward pass."""
    modules = list(acms(model).values())
    used = sum(m.last_choice.learners.float() * m.learner_macs for m in modules)
    return used / sum(m.num_learners * m.learner_macs for m in modules)


@torch.no_grad()
def evaluate_classifier(model: nn.Module, loader: DataLoader, method: str, setting: str,
                        maps: bool = False) -> tuple[dict[str, object], Tensor | None]:
    """One accuracy-vs-FLOPs row for `model` in eval mode, and (if `maps`) per-token compute maps.

    For ACM models the row also has `compute` = the realised per-sample compute fraction averaged
    over the set (what beta_target asks for).
    """
    model.eval()
    correct = seen = flops = 0
    token_maps = []
    has_acms = bool(acms(model))
    for x, y in progress(loader, f"eval {method} {setting}"):
        with FlopCounter(model) as counter:
            logits = model(x)
        flops += counter.report.total
        correct += int((logits.argmax(-1) == y).sum())
        seen += len(y)
        if has_acms:
            token_maps.append(token_compute(model))
    row: dict[str, object] = {"method": method, "setting": setting, "accuracy": correct / seen, "flops": flops / seen}
    all_maps = torch.cat(token_maps) if token_maps else None
    if all_maps is not None:
        row["compute"] = float(all_maps.mean())
    return row, (all_maps if maps else None)

"""Analyses of ACM models behind thesis Figs. 3.6 and 3.9 (spec ch2_acm B.8).

Fig. 3.6 asks how many learners a token really needs once stage 1 has distilled a module: the
original model's input z and output o of every token of chosen modules are recorded and the
squared error of every learner prefix h(z, n), n = 1..N, is measured, a (samples, tokens, N)
tensor whose tokens, sorted by mean error, make the heatmap. Fig. 3.9 asks whether the auxiliary
losses spread compute within images (per-token compute) and between them (per-image totals):
histograms of both on [0, 1], and how varied each image's choices are (normalised entropy of its
tokens' learner counts, claim R6 of spec D.b).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from fnmatch import fnmatch

import torch
from torch import Tensor, nn

from thesis.acm.convert import acms
from thesis.core.evaluate import progress
from thesis.acm.stages import TargetRecorder


def prefix_errors(prefixes: Tensor, target: Tensor) -> Tensor:
    """||h(z, n) - o||^2 per token and n: (..., N) from prefixes (..., N, d) and target (..., d)."""
    return (prefixes - target.unsqueeze(-2)).pow(2).sum(-1)


@torch.no_grad()
def distillation_errors(original: nn.Module, converted: nn.Module, loader: Iterable, modules: Sequence[str],
                        max_samples: int) -> dict[str, Tensor]:
    """Per ACM whose path matches one of `modules` (glob patterns such as "blocks.*.mlp"): the
    (samples, tokens, N) squared errors of its learner prefixes against the module it replaced,
    both fed what the original model feeds that module, on the first `max_samples` samples."""
    chosen = {path: acm for path, acm in acms(converted).items() if any(fnmatch(path, p) for p in modules)}
    if not chosen:
        raise ValueError(f"no ACM path matches {list(modules)}; the paths are {', '.join(acms(converted)) or 'none'}")
    recorder = TargetRecorder(original, chosen)
    device = next(converted.parameters()).device
    errors: dict[str, list[Tensor]] = {path: [] for path in chosen}
    seen = 0
    for x, _ in loader:
        records = recorder(x[:max_samples - seen].to(device))
        for path, acm in chosen.items():
            z, o = records[path]
            errors[path].append(prefix_errors(acm.forward_all(z), o).cpu())
        seen += min(len(x), max_samples - seen)
        if seen >= max_samples:
            break
    return {path: torch.cat(parts) for path, parts in errors.items()}


def tokens_by_mean_error(errors: Tensor) -> Tensor:
    """The rows of the Fig. 3.6 heatmap: every token's errors (samples x tokens, N), ordered by
    their mean over n, lowest first (ties keep sample-then-token order)."""
    flat = errors.reshape(-1, errors.shape[-1])
    return flat[flat.mean(-1).argsort(stable=True)]


def distillation_error_rows(errors: dict[str, Tensor]) -> list[dict]:
    """Long-form rows (module, sample, token, learners, squared_error) of `distillation_errors`."""
    rows = []
    for path, values in errors.items():
        for (sample, token, n), value in zip(torch.cartesian_prod(*map(torch.arange, values.shape)).tolist(),
                                             values.reshape(-1).tolist()):
            rows.append({"module": path, "sample": sample, "token": token, "learners": n + 1, "squared_error": value})
    return rows


def image_compute(maps: Tensor) -> Tensor:
    """Per-image total compute (B,): the mean of its tokens' fractions of the ACMs' learner cost,
    i.e. the share of the full model's learner cost the image used."""
    return maps.mean(-1)


def histogram(values: Tensor, bins: int) -> list[dict]:
    """Counts of `values` in `bins` equal bins of [0, 1] (1.0 falls in the last one)."""
    counts = torch.histc(values.float(), bins=bins, min=0.0, max=1.0)
    edges = [i / bins for i in range(bins + 1)]
    return [{"bin_low": edges[i], "bin_high": edges[i + 1], "count": int(c)} for i, c in enumerate(counts.tolist())]


def compute_histograms(maps: Tensor, bins: int) -> list[dict]:
    """Fig. 3.9 (bottom) from per-token compute maps (B, S): a histogram of every token's compute
    fraction (`level="token"`) and one of every image's total (`level="image"`)."""
    return ([{"level": "token", **row} for row in histogram(maps.reshape(-1), bins)]
            + [{"level": "image", **row} for row in histogram(image_compute(maps), bins)])


def normalised_entropy(choices: Tensor, num_choices: int) -> Tensor:
    """(B,) entropy of each row's empirical distribution over the choices {0..num_choices-1} of its
    tokens (B, S), divided by log(num_choices): 0 when every token chose alike, 1 when uniform."""
    shares = nn.functional.one_hot(choices.reshape(len(choices), -1).long(), num_choices).float().mean(1)
    entropy = -(shares * shares.clamp_min(1e-12).log()).sum(-1)
    return entropy / math.log(num_choices)


@torch.no_grad()
def choice_entropy(model: nn.Module, loader: Iterable) -> Tensor:
    """(images,) per image, the normalised entropy of its tokens' learner counts, averaged over the
    model's ACMs (eval mode: each gate's argmax). Low values mean an image's tokens all take the
    same number of learners (compute spread only between images, if at all)."""
    model.eval()
    modules = list(acms(model).values())
    if not modules:
        raise ValueError("choice_entropy needs a model with ACMs")
    device = next(model.parameters()).device
    per_image = []
    for x, _ in progress(loader, "choice entropy"):
        model(x.to(device))
        entropies = [normalised_entropy(m.last_choice.learners - m.min_choice, m.num_choices) for m in modules]
        per_image.append(torch.stack(entropies).mean(0).cpu())
    return torch.cat(per_image)

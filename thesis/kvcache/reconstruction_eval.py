"""Runner of `kv_ea_reconstruction` (thesis 4.3.6, Fig. 4.46): how far each press moves the model's states.

Each sequence of the data task (a ~5K-token text: `context_length` prefix tokens + `continuation_length`)
is run twice per press x ratio with `oracle.continuation_run`, as in the miniature's M4: the prefix is
prefilled (compressed once under the press, or whole), then the continuation is run on that cache, and
its states are compared with those of the uncompressed run, per layer: the mean over continuation
tokens of ||h - h_compr||_2 (`oracle.layer_errors`). `method.target` picks which states:
- `residual` (default, thesis: "the reconstruction error of the residual stream ... ||h - h_compr||"):
  the hidden states after each decoder layer;
- `attention_output`: the output of each layer's self-attention (sum_i a_ti W_o v_i of eq. 4.10),
  the term the eviction changes directly.
The figure averages over layers: rows with `layer` = "mean" hold that average.

"Optimal" (the figure's reference; thesis silent on its definition) is `oracle.FutureAttentionPress`,
scoring with the continuation's true queries from the uncompressed run. Enabled with `method.oracle: true`.

Writes `tables/reconstruction.csv` (press, ratio, target, layer, error, achieved_ratio); metrics
`<press>/<ratio>/error` (mean over layers and sequences).
"""

from __future__ import annotations

from collections import defaultdict

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from thesis.core.errors import ConfigError
from thesis.core.evaluate import progress
from thesis.core.hardware import device_of
from thesis.core.rundir import RunDir
from thesis.kvcache.oracle import FutureAttentionPress, continuation_run, layer_errors
from thesis.kvcache.runner import build_press, load_model
from thesis.kvcache.tasks.base import PerplexityTask

TARGETS = ("residual", "attention_output")


def evaluate_reconstruction(cfg: DictConfig, run: RunDir) -> dict[str, float]:
    target = cfg.method.target
    if target not in TARGETS:
        raise ConfigError(f"method.target must be one of {TARGETS}; got {target!r}")
    model, tokenizer = load_model(cfg.model, device_of(cfg.hardware))
    task = instantiate(cfg.data.task)
    if not isinstance(task, PerplexityTask):
        raise ConfigError("data.task must be a perplexity task (sequences of prefix + continuation tokens)")
    sequences = [(ids[:, :task.context_length], ids[:, task.context_length:]) for ids in task.sequences(tokenizer)]
    references = [continuation_run(model, prefix, continuation, None) for prefix, continuation in sequences]
    names = list(cfg.method.presses) + (["optimal"] if cfg.method.oracle else [])
    filters: dict[str, Tensor] = {}
    errors: dict[tuple[str, float], list[Tensor]] = defaultdict(list)
    achieved: dict[tuple[str, float], list[float]] = defaultdict(list)
    settings = [(name, ratio) for name in names for ratio in cfg.method.compression_ratios]
    for name, ratio in progress(settings, desc="presses x ratios"):
        if name != "optimal":
            press = build_press(OmegaConf.to_container(cfg.method.presses[name], resolve=True), ratio, model, filters)
        for (prefix, continuation), reference in zip(sequences, references):
            if name == "optimal":
                press = FutureAttentionPress(compression_ratio=ratio, future_queries=reference.queries)
            compressed = continuation_run(model, prefix, continuation, press)
            sequence_errors = layer_errors(getattr(reference, target), getattr(compressed, target)).mean(dim=1)
            errors[name, ratio].append(sequence_errors)
            achieved[name, ratio].append(1 - compressed.prefix_pairs / reference.prefix_pairs)
    rows, metrics = [], {}
    for (name, ratio), per_sequence in errors.items():
        per_layer = torch.stack(per_sequence).mean(dim=0)
        ratio_achieved = sum(achieved[name, ratio]) / len(achieved[name, ratio])
        for layer, error in [*enumerate(per_layer.tolist()), ("mean", float(per_layer.mean()))]:
            rows.append({"press": name, "ratio": ratio, "target": target, "layer": layer, "error": error,
                         "achieved_ratio": ratio_achieved})
        metrics[f"{name}/{ratio:g}/error"] = float(per_layer.mean())
    run.write_table("reconstruction", rows)
    return metrics

"""Base training and ACM stages 1-2 kept once for every run that differs only after them.

A beta sweep (`acm_vitb_sweep`) or a loss ablation (`acm_mini_ablation`) is one run directory per
stage-3 setting, yet base training and stages 1-2 read nothing those settings change. They
therefore checkpoint in `<output_dir>/.stages/<hash>/`, the hash covering the whole run config
except `method`, of which it keeps only the keys these stages read: the first run trains them,
every later run loads their finished checkpoints and gets the same weights. A lock serialises
runs that reach them at the same time (a parallel launcher); `force=true` retrains them, in every
run of a forced sweep.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from thesis.core.rundir import HASH_LENGTH, RunDir, semantic_config

#: the method keys that base training and ACM stages 1-2 read (everything else in `method` is later)
PREFIX_METHOD_KEYS = ("base", "epochs.base", "epochs.acm_stage1", "epochs.acm_stage2", "batch_sizes",
                      "acm.convert", "acm.stage1", "acm.stage2")


def prefix_config(cfg: DictConfig) -> dict:
    """What base training and stages 1-2 depend on: the run's semantic config with `method`
    reduced to PREFIX_METHOD_KEYS."""
    method = OmegaConf.create()
    for key in PREFIX_METHOD_KEYS:
        OmegaConf.update(method, key, OmegaConf.select(cfg.method, key), force_add=True)
    return {**semantic_config(cfg), "method": OmegaConf.to_container(method, resolve=True)}


def prefix_hash(cfg: DictConfig) -> str:
    blob = json.dumps(prefix_config(cfg), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:HASH_LENGTH]


@contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def shared_stages(cfg: DictConfig) -> Iterator[RunDir]:
    """The shared stages' directory, held exclusively while the caller trains or resumes them.

    Under `force=true` it is emptied first, so a forced run retrains them as it retrains the rest.
    """
    stages = RunDir(Path(cfg.paths.output_dir) / ".stages" / prefix_hash(cfg))
    with _exclusive(stages.path.with_suffix(".lock")):
        if cfg.force:
            stages.clear()
        stages.write_config(OmegaConf.create(prefix_config(cfg)))
        yield stages

"""Run directories: `<output_dir>/<experiment>/<config hash>/` with config, metrics, provenance.

The hash covers everything that can change a result and nothing that cannot (where outputs go,
whether to force a rerun, which logger records curves), so re-launching a finished run finds its
directory and skips it, and a sweep interrupted halfway re-runs only what is missing.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from omegaconf import DictConfig, OmegaConf

from thesis.core.io import atomic_write_json, atomic_write_text, read_json

#: top-level keys that do not change what a run computes
NON_SEMANTIC_KEYS = ("force", "paths", "logger", "hydra", "checkpoint_every_n_steps")
HASH_LENGTH = 10

Metric = float | int | str | bool | None


def semantic_config(cfg: DictConfig) -> dict[str, Any]:
    resolved = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    return {k: v for k, v in resolved.items() if k not in NON_SEMANTIC_KEYS}


def config_hash(cfg: DictConfig) -> str:
    blob = json.dumps(semantic_config(cfg), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:HASH_LENGTH]


def flatten_metrics(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, Metric]:
    """Flatten nested dicts with '/' and turn 0-d tensors / numpy scalars into Python numbers."""
    flat: dict[str, Metric] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_metrics(value, prefix=f"{name}/"))
            continue
        if hasattr(value, "item"):
            value = value.item()
        if not isinstance(value, (float, int, str, bool)) and value is not None:
            raise TypeError(f"metric {name!r} has type {type(value).__name__}; metrics must be scalars")
        if isinstance(value, float) and not math.isfinite(value):
            value = str(value)  # JSON has no NaN/Inf; keep the fact visible as text
        flat[name] = value
    return flat


@dataclass(frozen=True)
class RunDir:
    """One run's directory and the files in it."""

    path: Path

    @classmethod
    def for_config(cls, output_dir: str | Path, experiment: str, cfg: DictConfig) -> "RunDir":
        return cls(Path(output_dir) / experiment / config_hash(cfg))

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.json"

    @property
    def provenance_path(self) -> Path:
        return self.path / "provenance.json"

    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / "checkpoints"

    @property
    def tables_dir(self) -> Path:
        """Per-run long-form tables (`<table>.csv`) that the collector concatenates."""
        return self.path / "tables"

    @property
    def figures_dir(self) -> Path:
        return self.path / "figures"

    @property
    def done(self) -> bool:
        return self.metrics_path.is_file()

    def clear(self) -> None:
        """Delete everything the run wrote (used by force=true)."""
        shutil.rmtree(self.path, ignore_errors=True)

    def write_config(self, cfg: DictConfig) -> None:
        atomic_write_text(self.config_path, OmegaConf.to_yaml(cfg, resolve=True))

    def write_metrics(self, metrics: Mapping[str, Any]) -> dict[str, Metric]:
        flat = flatten_metrics(metrics)
        atomic_write_json(self.metrics_path, flat)
        return flat

    def read_metrics(self) -> dict[str, Metric]:
        return read_json(self.metrics_path)

    def write_provenance(self, provenance: Mapping[str, Any]) -> None:
        atomic_write_json(self.provenance_path, dict(provenance))

    def write_table(self, name: str, rows: list[Mapping[str, Any]]) -> Path:
        """Write a long-form table (one dict per row) as CSV, atomically."""
        import pandas as pd

        text = pd.DataFrame(list(rows)).to_csv(index=False)
        return atomic_write_text(self.tables_dir / f"{name}.csv", text)

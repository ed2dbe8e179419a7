"""Execute one composed experiment config: scale, seed, run directory, runner, results.

`thesis.run` (Hydra) and the tests both call `execute`, so what CI checks is what users run.
"""

from __future__ import annotations

import importlib
import logging
from typing import Callable, Mapping

from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from thesis.core import provenance
from thesis.core.errors import ConfigError
from thesis.core.rundir import Metric, RunDir
from thesis.core.seeding import seed_everything

log = logging.getLogger(__name__)

Runner = Callable[[DictConfig, RunDir], Mapping[str, object]]

#: short names for the two shared runners; any other value is a dotted path to a callable
RUNNERS = {
    "train": "thesis.core.train.run_training",
    "evaluate": "thesis.core.evaluate.run_evaluation",
}


def _replacements(twin: DictConfig, prefix: str = "") -> dict[str, DictConfig]:
    """Nodes of the smoke block that name their own `_target_`: they replace, not merge."""
    found = {}
    for key, value in twin.items_ex(resolve=False):
        if isinstance(value, DictConfig):
            path = f"{prefix}{key}"
            found.update({path: value} if "_target_" in value else _replacements(value, f"{path}."))
    return found


def apply_scale(cfg: DictConfig) -> DictConfig:
    """At smoke scale, lay the experiment's `smoke:` block (its tiny twin) over the config.

    A node of the block that names a `_target_` replaces the whole node (another model family's
    tiny twin, a fixture reader); every other key merges and must already exist: struct mode
    turns a typo into an error. The block itself is removed at both scales, so the run's config
    holds only what it used.
    """
    twin = cfg.get("smoke") if cfg.scale.name == "smoke" else None
    merged = cfg.copy()
    with open_dict(merged):
        merged.pop("smoke", None)  # the inactive block must not be resolved (its fixtures built)
    if twin:
        replacements = _replacements(twin)
        rest = OmegaConf.masked_copy(twin, list(twin.keys()))
        with open_dict(merged), open_dict(rest):
            for path, node in replacements.items():
                OmegaConf.update(merged, path, node, merge=False)
                parent, _, key = path.rpartition(".")
                (OmegaConf.select(rest, parent) if parent else rest).pop(key)
        merged = OmegaConf.merge(merged, rest)
    OmegaConf.set_struct(merged, True)
    return merged


def resolve_runner(name: str) -> Runner:
    target = RUNNERS.get(name, name)
    module_name, _, attr = target.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(
            f"method.runner={name!r} is neither {' nor '.join(RUNNERS)} nor an importable callable ({exc})"
        ) from exc


def execute(cfg: DictConfig, experiment: str | None, overrides: list[str] | None = None) -> dict[str, Metric]:
    """Run `experiment` as configured by `cfg` and return its flat metrics dict.

    A run whose metrics.json exists is skipped (its metrics are returned) unless `force=true`;
    a run without metrics.json resumes from the checkpoints its stages left.
    """
    if not experiment:
        raise ConfigError("no experiment chosen: run `python -m thesis.run experiment=<name>` "
                          "(`python -m thesis.run --help` lists them)")
    cfg = apply_scale(cfg)
    try:
        OmegaConf.resolve(cfg)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"cannot resolve the config: {exc}".replace("\n", " ")) from exc
    run = RunDir.for_config(cfg.paths.output_dir, experiment, cfg)
    if run.done and not cfg.force:
        log.info("skip: %s already has metrics.json (force=true reruns it)", run.path)
        return run.read_metrics()
    runner = resolve_runner(cfg.method.runner)
    seed_everything(cfg.seed)
    if cfg.force:
        run.clear()  # a forced rerun starts from scratch, not from the old checkpoints
    run.write_config(cfg)
    record = provenance.collect(cfg.seed, experiment, overrides or [])
    record["scale"] = cfg.scale.name
    run.write_provenance(record)
    log.info("run directory: %s", run.path)
    metrics = run.write_metrics(runner(cfg, run))
    record["end_time"] = provenance.now()
    run.write_provenance(record)
    log.info("metrics: %s", metrics)
    return metrics

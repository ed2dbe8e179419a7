"""Execute one composed experiment config: scale, seed, run directory, runner, results.

`thesis.run` (Hydra) and the tests both call `execute`, so what CI checks is what users run.
Under distributed training every process executes the config; only the first writes the run's
files, so config.yaml, provenance.json and metrics.json are written once, each atomically.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
from typing import Any, Callable, Mapping, Optional

from hydra.errors import InstantiationException
from omegaconf import MISSING, DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException, ValidationError

from thesis.core import provenance
from thesis.core.errors import ConfigError, ThesisError
from thesis.core.hardware import check_hardware, is_first_process
from thesis.core.rundir import Metric, RunDir, flatten_metrics
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


#: types of the root keys every run has; `trainer` is typed from lightning.Trainer's signature
ROOT_TYPES = {"seed": int, "force": bool, "checkpoint_every_n_steps": Optional[int]}
_TYPE_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def _schema(name: str, types: Mapping[str, Any]) -> type:
    return dataclasses.make_dataclass(name, [(key, kind, dataclasses.field(default=MISSING))
                                             for key, kind in types.items()])


def check_types(cfg: DictConfig) -> None:
    """Refuse values of the wrong type (`seed=x`, `trainer.max_epochs=abc`) before any work starts.

    The keys are merged into a structured config (OmegaConf's typed nodes); its ValidationError
    becomes one line naming the key and the type it needs. Trainer keys that lightning.Trainer
    does not take are refused too.
    """
    from thesis.core.train import trainer_argument_types

    trainer_types = trainer_argument_types()
    unknown = sorted(set(cfg.trainer) - set(trainer_types))
    if unknown:
        raise ConfigError(f"trainer.{unknown[0]} is not an argument of lightning.Trainer: remove it or fix its name")
    schema = _schema("RunTypes", {**ROOT_TYPES, "trainer": _schema("TrainerArguments", trainer_types)})
    values = OmegaConf.masked_copy(cfg, [*ROOT_TYPES, "trainer"])
    try:
        OmegaConf.merge(OmegaConf.structured(schema), values)
    except ValidationError as exc:
        key = exc.full_key
        parent, _, leaf = key.rpartition(".")
        kind = (trainer_types if parent == "trainer" else ROOT_TYPES)[leaf]
        expected = next((text for t, text in _TYPE_NAMES.items() if kind in (t, Optional[t])), "another type")
        reason = str(exc.msg).splitlines()[0]
        raise ConfigError(f"{key}={OmegaConf.select(cfg, key)!r} has the wrong type ({reason}): "
                          f"set {key} to {expected}") from None


def resolve_runner(name: str) -> Runner:
    target = RUNNERS.get(name, name)
    module_name, _, attr = target.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(
            f"method.runner={name!r} is neither {' nor '.join(RUNNERS)} nor an importable callable ({exc})"
        ) from exc


def run_runner(runner: Runner, cfg: DictConfig, run: RunDir) -> Mapping[str, object]:
    """Call the runner; a project error raised while Hydra instantiates a `_target_` (a corrupt or
    mismatched checkpoint, a missing dataset) comes out as itself, not wrapped in Hydra's error."""
    try:
        return runner(cfg, run)
    except InstantiationException as exc:
        if isinstance(exc.__cause__, ThesisError):
            raise exc.__cause__ from None
        raise


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
    check_types(cfg)
    run = RunDir.for_config(cfg.paths.output_dir, experiment, cfg)
    if run.done and not cfg.force:
        log.info("skip: %s already has metrics.json (force=true reruns it)", run.path)
        return run.read_metrics()
    check_hardware(cfg.hardware)
    runner = resolve_runner(cfg.method.runner)
    seed_everything(cfg.seed)
    if not is_first_process():  # another rank of a distributed run: compute, write nothing
        return flatten_metrics(run_runner(runner, cfg, run))
    if cfg.force:
        run.clear()  # a forced rerun starts from scratch, not from the old checkpoints
    run.write_config(cfg)
    record = provenance.collect(cfg.seed, experiment, overrides or [])
    record["scale"] = cfg.scale.name
    run.write_provenance(record)
    log.info("run directory: %s", run.path)
    metrics = run.write_metrics(run_runner(runner, cfg, run))
    record["end_time"] = provenance.now()
    run.write_provenance(record)
    log.info("metrics: %s", metrics)
    return metrics

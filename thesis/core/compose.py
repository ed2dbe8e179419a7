"""Compose configs outside `@hydra.main` and turn Hydra's composition errors into one line.

The launcher validates the command line with `compose` before handing it to Hydra, so a typo in
a key or an option is reported as `error: <what> ; valid: <choices>` instead of a stack of
Hydra messages. Tests compose every experiment through the same function.
"""

from __future__ import annotations

import re
from pathlib import Path

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
from omegaconf import DictConfig, OmegaConf

from thesis.core.errors import ConfigError
from thesis.core.resolvers import register_resolvers

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
GROUPS = ("model", "data", "method", "hardware", "trainer", "logger", "paths", "experiment", "scale")


def config_dir() -> Path:
    if not (CONFIG_DIR / "run.yaml").is_file():
        raise ConfigError(f"config tree not found at {CONFIG_DIR}: install the repo editable (pip install -e .)")
    return CONFIG_DIR


def options(group: str) -> list[str]:
    """The files of one config group, as a user types them."""
    return sorted(p.stem for p in (config_dir() / group).glob("*.yaml"))


def experiments() -> list[str]:
    return options("experiment")


def _compose_raw(overrides: list[str]) -> DictConfig:
    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return hydra_compose(config_name="run", overrides=list(overrides))


def _valid_keys(key: str, overrides: list[str]) -> str:
    """The keys that exist where `key` was looked up, composed without the offending override."""
    others = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") != key]
    try:
        node = _compose_raw(others)
    except Exception:  # noqa: BLE001 - best effort: the message is already precise without it
        return ""
    parent, _, _ = key.rpartition(".")
    node = OmegaConf.select(node, parent) if parent else node
    return ", ".join(sorted(str(k) for k in node.keys())) if isinstance(node, DictConfig) else ""


def compose(overrides: list[str]) -> DictConfig:
    """Compose `run.yaml` with command-line `overrides`; raise ConfigError with a one-line message."""
    try:
        return _compose_raw(overrides)
    except MissingConfigException as exc:
        match = re.search(r"Could not find '([^/']+)/([^']+)'", str(exc))
        if match:
            group, name = match.groups()
            raise ConfigError(f"{group}={name} does not exist; valid {group} options: "
                              f"{', '.join(options(group))}") from None
        raise ConfigError(str(exc).splitlines()[0]) from None
    except ConfigCompositionException as exc:
        match = re.search(r"Could not override '([^']+)'", str(exc))
        if match:
            key = match.group(1)
            valid = _valid_keys(key, overrides)
            hint = f"; valid keys there: {valid}" if valid else ""
            raise ConfigError(f"unknown config key '{key}'{hint}") from None
        cause = exc.__cause__ or exc
        raise ConfigError(" ".join(str(cause).split())) from None
    except OverrideParseException as exc:
        raise ConfigError(f"cannot parse the command line: {' '.join(str(exc).split())}") from None

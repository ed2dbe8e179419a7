"""The only launcher: `python -m thesis.run experiment=<name> [scale=smoke] [key=value ...]`.

The command line is first validated with the compose API (one-line errors for unknown keys and
options), then handed to Hydra so that sweeps (-m) and launchers work as Hydra users expect.
"""

from __future__ import annotations

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from thesis.core.compose import CONFIG_DIR, GROUPS, compose, experiments, options
from thesis.core.errors import ConfigError, ThesisError
from thesis.core.experiment import execute
from thesis.core.resolvers import register_resolvers



@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="run")
def main(cfg: DictConfig) -> None:
    hydra_cfg = HydraConfig.get()
    experiment = hydra_cfg.runtime.choices.get("experiment")
    try:
        execute(cfg, experiment, list(hydra_cfg.overrides.task))
    except ThesisError as exc:
        sys.stderr.write(f"error: {exc}\n")
        sys.exit(2)


USAGE = """\
usage: python -m thesis.run experiment=<name> [scale=smoke|paper] [group=option ...] [key=value ...]

Runs one experiment of the thesis "Adaptive and Efficient Neural Architectures" and writes
<paths.output_dir>/<experiment>/<config hash>/ with config.yaml, metrics.json, provenance.json.
A finished run is skipped; force=true reruns it. -m sweeps (seed=0,1,2); --cfg job prints the
composed config; --hydra-help shows Hydra's own flags.
"""


def usage() -> str:
    lines = [USAGE, "experiments:"]
    lines += [f"  {name}" for name in experiments()]
    lines += ["", "config groups (group=option):"]
    lines += [f"  {group:9s} {', '.join(options(group))}" for group in GROUPS if group != "experiment"]
    return "\n".join(lines)


def cli(argv: list[str]) -> None:
    """Validate plain runs before Hydra sees them; flags and sweeps go straight to Hydra."""
    register_resolvers()
    if "--help" in argv or "-h" in argv:
        print(usage())
        return
    is_plain = not any(a.startswith("-") for a in argv)
    if is_plain:
        try:
            if not any(a.startswith("experiment=") for a in argv):
                raise ConfigError(f"no experiment chosen: add experiment=<name>, one of {', '.join(experiments())}")
            compose(argv)
        except ThesisError as exc:
            sys.stderr.write(f"error: {exc}\n")
            sys.exit(2)
    main()


if __name__ == "__main__":
    cli(sys.argv[1:])

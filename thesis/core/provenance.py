"""What produced a result: code version, seed, package versions, device and time."""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import platform
import subprocess
import sys
from pathlib import Path

import torch

PACKAGES = (
    "torch", "torchvision", "torchaudio", "lightning", "hydra-core", "omegaconf", "timm",
    "transformers", "torch-geometric", "scikit-learn", "triton", "wandb", "numpy", "thesis",
)
REPO_ROOT = Path(__file__).resolve().parents[2]


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def git_state(root: Path = REPO_ROOT) -> dict[str, object]:
    """The commit checked out at `root` and whether the work tree differs from it."""

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def device_description() -> dict[str, object]:
    info: dict[str, object] = {"platform": platform.platform(), "processor": platform.machine()}
    if torch.cuda.is_available():
        info["cuda"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    else:
        info["cuda"] = []
    info["torch_threads"] = torch.get_num_threads()
    return info


def collect(seed: int, experiment: str, overrides: list[str]) -> dict[str, object]:
    """Provenance at the start of a run; the runner adds `end_time` when it finishes."""
    return {
        "experiment": experiment,
        "overrides": list(overrides),
        "seed": seed,
        "git": git_state(),
        "python": sys.version.split()[0],
        "packages": package_versions(),
        "device": device_description(),
        "argv": list(sys.argv),
        "start_time": now(),
    }

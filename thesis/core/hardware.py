"""Checks that a run's hardware settings fit the machine, and which process of a distributed run
this is, before any work starts.

Distributed training (DDP, FSDP) runs one process per device. Lightning starts them itself
(`ddp` re-runs the command line, `ddp_fork` forks) or finds them started by a cluster (SLURM's
tasks, torchrun); either way every process runs the same code and only the first may write the
run's files.
"""

from __future__ import annotations

import os

import torch
from omegaconf import DictConfig

from thesis.core.errors import ConfigError, DeviceError

#: environment variables that give a process's rank, in the order Lightning reads them: LOCAL_RANK
#: before SLURM_PROCID, because SLURM sets the latter even when Lightning starts the processes
_RANK_VARIABLES = ("RANK", "LOCAL_RANK", "SLURM_PROCID")
_NODE_RANK_VARIABLES = ("NODE_RANK", "GROUP_RANK")


def uses_gpu(hardware: DictConfig) -> bool:
    return hardware.accelerator in ("gpu", "cuda")


def check_hardware(hardware: DictConfig) -> None:
    if uses_gpu(hardware) and not torch.cuda.is_available():
        raise DeviceError("hardware requests a GPU but torch sees none: use hardware=cpu on this machine "
                          "(hardware=ddp_cpu to try distributed training on CPU)")
    if uses_gpu(hardware) and isinstance(hardware.devices, int) and hardware.devices > torch.cuda.device_count():
        raise DeviceError(f"hardware.devices={hardware.devices} but torch sees {torch.cuda.device_count()} GPU(s): "
                          f"set hardware.devices={torch.cuda.device_count()}")


def device_of(hardware: DictConfig) -> torch.device:
    """The torch device a training-free run should use."""
    check_hardware(hardware)
    return torch.device("cuda" if uses_gpu(hardware) else "cpu")


def is_first_process() -> bool:
    """Whether this process is rank 0 of its run (always true outside distributed training).

    Read from the environment, so it is known before Lightning sets up the process group.
    """
    for name in _RANK_VARIABLES:
        if name in os.environ:
            rank = int(os.environ[name])
            node = next((int(os.environ[v]) for v in _NODE_RANK_VARIABLES if v in os.environ), 0)
            return rank == 0 and (name != "LOCAL_RANK" or node == 0)
    return True


def check_launch(strategy: object) -> None:
    """Refuse a launcher that re-runs the command line (Lightning's `ddp`, `fsdp`) inside a local
    `-m` sweep: each extra process would start the whole sweep again."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from lightning.pytorch.strategies.launchers import _SubprocessScriptLauncher

    relaunches = isinstance(getattr(strategy, "launcher", None), _SubprocessScriptLauncher)
    if relaunches and HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        raise ConfigError("hardware.strategy re-runs the command line for each extra process, which a -m sweep "
                          "cannot do: sweep with hardware=slurm (SLURM starts one task per device), run each "
                          "setting without -m, or on CPU use hardware=ddp_cpu (it forks)")

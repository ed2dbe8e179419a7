"""Checks that a run's hardware settings fit the machine, before any work starts."""

from __future__ import annotations

import torch
from omegaconf import DictConfig

from thesis.core.errors import DeviceError


def check_hardware(hardware: DictConfig) -> None:
    if hardware.accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise DeviceError("hardware requests a GPU but torch sees none: use hardware=cpu on this machine")


def device_of(hardware: DictConfig) -> torch.device:
    """The torch device a training-free run should use."""
    check_hardware(hardware)
    return torch.device("cuda" if hardware.accelerator in ("gpu", "cuda") else "cpu")

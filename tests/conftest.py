"""Test-wide settings: offline, CPU, quiet; helpers to compose experiments into a temp dir."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402


@pytest.fixture
def compose_experiment(tmp_path):
    """Compose `experiment=<name>` with outputs (and fixtures) under the test's temp dir."""
    from thesis.core.compose import compose

    def _compose(name: str, *overrides: str, scale: str = "smoke"):
        return compose([f"experiment={name}", f"scale={scale}", f"paths.output_dir={tmp_path / 'outputs'}",
                        f"paths.fixture_dir={tmp_path / 'fixtures'}", "logger=csv", *overrides])

    return _compose

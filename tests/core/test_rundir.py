"""Run directories: hashing, flat metrics, atomic writes."""

import math

import pytest
import torch
from omegaconf import OmegaConf

from thesis.core.io import atomic_write_text
from thesis.core.rundir import RunDir, config_hash, flatten_metrics


def cfg(**kw):
    base = {"seed": 0, "force": False, "paths": {"output_dir": "a"}, "logger": {"x": 1}, "model": {"w": 4}}
    base.update(kw)
    return OmegaConf.create(base)


def test_hash_ignores_where_outputs_go_and_force():
    assert config_hash(cfg()) == config_hash(cfg(force=True, paths={"output_dir": "b"}, logger=None))


def test_hash_changes_with_anything_that_changes_the_result():
    assert config_hash(cfg()) != config_hash(cfg(seed=1))
    assert config_hash(cfg()) != config_hash(cfg(model={"w": 5}))


def test_flatten_metrics_nested_tensors_and_non_finite():
    flat = flatten_metrics({"val": {"acc": torch.tensor(0.5)}, "n": 3, "bad": math.nan})
    assert flat == {"val/acc": 0.5, "n": 3, "bad": "nan"}
    with pytest.raises(TypeError, match="metrics must be scalars"):
        flatten_metrics({"v": [1, 2]})


def test_atomic_write_leaves_no_temporary(tmp_path):
    target = atomic_write_text(tmp_path / "sub" / "x.txt", "hello")
    assert target.read_text() == "hello"
    assert [p.name for p in target.parent.iterdir()] == ["x.txt"]


def test_atomic_write_keeps_old_file_when_interrupted(tmp_path, monkeypatch):
    target = atomic_write_text(tmp_path / "x.json", "old")

    def boom(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr("os.replace", boom)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_text(target, "new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_rundir_tables_round_trip(tmp_path):
    run = RunDir(tmp_path)
    path = run.write_table("curve", [{"t": 0.5, "acc": 0.9}, {"t": 0.9, "acc": 0.95}])
    assert path.read_text().splitlines() == ["t,acc", "0.5,0.9", "0.9,0.95"]


def test_atomic_write_gives_ordinary_permissions(tmp_path):
    import os

    mask = os.umask(0)
    os.umask(mask)
    target = atomic_write_text(tmp_path / "m.json", "{}")
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask


WRITER = """
import sys
from thesis.core.io import atomic_write_json

for version in range(10**6):
    atomic_write_json(sys.argv[1], {"version": version, "padding": "x" * 2_000_000})
"""


def test_writer_killed_mid_write_leaves_a_whole_file_or_none(tmp_path):
    """SIGKILL a process that rewrites a 2 MB metrics.json in a loop, at several moments: the
    file is always absent or complete JSON, never a prefix."""
    import json
    import signal
    import subprocess
    import sys
    import time

    target = tmp_path / "metrics.json"
    versions = []
    for delay in (0.05, 0.3, 0.6, 0.9, 1.2):
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(target)])
        time.sleep(delay)
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        if target.exists():
            data = json.loads(target.read_text())
            assert len(data["padding"]) == 2_000_000
            versions.append(data["version"])
    assert versions, "no write finished before the kills; lengthen the delays"
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith(".")] == ["metrics.json"]

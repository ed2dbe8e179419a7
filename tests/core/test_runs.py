"""Runs as users rely on them: skip-if-done, force, resume, seeding, clear errors."""

import json

import pytest
import torch

from thesis.core.errors import DataNotFoundError, NonFiniteLossError
from thesis.core.experiment import execute

EXPERIMENT = "condcomp_dense_digits"


def run_once(compose_experiment, *overrides):
    return execute(compose_experiment(EXPERIMENT, *overrides), EXPERIMENT)


def run_dir(tmp_path):
    (path,) = (tmp_path / "outputs" / EXPERIMENT).iterdir()
    return path


def test_finished_run_is_skipped_and_force_reruns(compose_experiment, tmp_path):
    first = run_once(compose_experiment)
    stamp = json.loads((run_dir(tmp_path) / "provenance.json").read_text())["start_time"]
    (run_dir(tmp_path) / "metrics.json").write_text(json.dumps({"marker": 1}))
    assert run_once(compose_experiment) == {"marker": 1}  # skipped: nothing recomputed
    assert run_once(compose_experiment, "force=true") == first
    assert json.loads((run_dir(tmp_path) / "provenance.json").read_text())["start_time"] >= stamp


def test_same_seed_same_metrics_other_seed_differs(compose_experiment, tmp_path):
    a = run_once(compose_experiment)
    b = run_once(compose_experiment, "force=true")
    c = run_once(compose_experiment, "seed=1")
    assert a == b
    assert a != c


def test_deleted_metrics_resume_from_checkpoint(compose_experiment, tmp_path):
    first = run_once(compose_experiment)
    path = run_dir(tmp_path)
    assert (path / "checkpoints" / "train" / "last.ckpt").is_file()
    (path / "metrics.json").unlink()
    again = run_once(compose_experiment)  # training resumes at its end: same weights, same test
    assert again["test/acc"] == first["test/acc"]


def test_missing_dataset_directory_names_the_fix(tmp_path):
    from thesis.core.data import ImageFolderDataModule

    dm = ImageFolderDataModule(root=str(tmp_path / "nowhere"), prepare_hint="run scripts/prepare_x.py")
    with pytest.raises(DataNotFoundError, match=r"nowhere/train not found: run scripts/prepare_x.py"):
        dm.setup()


def test_nan_loss_stops_with_step(compose_experiment, tmp_path, monkeypatch):
    from thesis.core import modules

    def nan_loss(self, batch):
        logits = self.model(batch[0])
        return logits.sum() * torch.tensor(float("nan")), logits, {}

    monkeypatch.setattr(modules.ClassificationModule, "loss_and_logits", nan_loss)
    with pytest.raises(NonFiniteLossError, match=r"training loss became nan at global step \d+"):
        run_once(compose_experiment)
    assert not (run_dir(tmp_path) / "metrics.json").exists()


def test_gpu_setting_on_cpu_machine_names_the_fix(compose_experiment):
    from thesis.core.errors import DeviceError

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(DeviceError, match="use hardware=cpu"):
        run_once(compose_experiment, "hardware=gpu")


def test_wandb_logger_works_offline_without_account(compose_experiment, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    metrics = execute(compose_experiment(EXPERIMENT, "logger=wandb"), EXPERIMENT)
    assert "test/acc" in metrics
    assert list((run_dir(tmp_path) / "wandb").glob("offline-run-*"))


def test_smoke_block_merges_keys_and_replaces_targets():
    from omegaconf import OmegaConf

    from thesis.core.experiment import apply_scale

    cfg = OmegaConf.create({"scale": {"name": "smoke"}, "model": {"_target_": "a.big", "weights": "w"},
                            "data": {"root": "/real", "size": 224},
                            "smoke": {"model": {"_target_": "a.tiny", "checkpoint": "c"}, "data": {"size": 32}}})
    OmegaConf.set_struct(cfg, True)
    out = apply_scale(cfg)
    assert OmegaConf.to_container(out) == {"scale": {"name": "smoke"}, "model": {"_target_": "a.tiny", "checkpoint": "c"},
                                           "data": {"root": "/real", "size": 32}}
    cfg.smoke.data = {"sise": 32}
    with pytest.raises(Exception, match="sise"):
        apply_scale(cfg)
    cfg.scale.name = "paper"
    assert "smoke" not in apply_scale(cfg)


def test_fit_trains_a_model_that_arrives_in_eval_mode(compose_experiment, tmp_path):
    from torch import nn

    from thesis.core.data import DigitsDataModule
    from thesis.core.modules import ClassificationModule
    from thesis.core.rundir import RunDir
    from thesis.core.train import fit

    modes = []

    class Probe(nn.Linear):
        def forward(self, x):
            modes.append(self.training)
            return super().forward(x)

    module = ClassificationModule(Probe(64, 10).eval())
    cfg = compose_experiment(EXPERIMENT)
    fit(module, DigitsDataModule(limit=64), cfg, RunDir(tmp_path / "run"), test=False, max_epochs=1,
        limit_val_batches=0)
    assert modes and all(modes)

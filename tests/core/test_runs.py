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


@pytest.mark.parametrize("hardware", ["gpu", "ddp", "fsdp"])
def test_gpu_setting_on_cpu_machine_names_the_fix(compose_experiment, tmp_path, hardware):
    from thesis.core.errors import DeviceError

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(DeviceError, match="use hardware=cpu"):
        run_once(compose_experiment, f"hardware={hardware}")
    assert not (tmp_path / "outputs").exists()  # refused before the run directory was made


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("seed=x", r"seed='x' has the wrong type .*: set seed to an integer"),
        ("trainer.max_epochs=abc", r"trainer.max_epochs='abc' has the wrong type .*: set trainer.max_epochs to an integer"),
        ("trainer.limit_train_batches=half", r"limit_train_batches='half' .*: set trainer.limit_train_batches to a number"),
        ("force=maybe", r"force='maybe' has the wrong type .*: set force to true or false"),
        ("+trainer.max_epoch=3", r"trainer.max_epoch is not an argument of lightning.Trainer: remove it or fix its name"),
    ],
)
def test_wrong_type_names_key_and_type(compose_experiment, tmp_path, override, message):
    from thesis.core.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        run_once(compose_experiment, override)
    assert not (tmp_path / "outputs").exists()


def test_missing_dataset_names_the_prepare_script(compose_experiment, tmp_path):
    name = "condcomp_token_drop_vitb"
    cfg = compose_experiment(name, "model.pretrained=false", f"paths.data_dir={tmp_path / 'data'}", scale="paper")
    with pytest.raises(DataNotFoundError, match=r"imagenet/train not found: run `python scripts/prepare_imagenet.py "
                                                r"--src <ILSVRC2012 folder> --out .*data/imagenet`"):
        execute(cfg, name)


@pytest.mark.parametrize(
    ("override", "scale", "message"),
    [
        ("model.checkpoint={tmp}/none/model.safetensors", "paper", r"none/model.safetensors not found: check model.checkpoint"),
        ("+model.embed_dim=64", "smoke", r"made for another architecture than vit_tiny_patch16_224 \(shape cls_token"),
    ],
)
def test_bad_weights_name_the_file_through_hydra_instantiate(compose_experiment, tmp_path, override, scale, message):
    """Errors raised while Hydra instantiates the model come out as the project's own error."""
    from thesis.core.errors import CheckpointError

    name = "condcomp_token_drop_vitb"
    with pytest.raises(CheckpointError, match=message):
        execute(compose_experiment(name, override.format(tmp=tmp_path), scale=scale), name)


def test_other_ranks_compute_but_write_no_run_files(compose_experiment, tmp_path, monkeypatch):
    """A process that is not rank 0 of a distributed run (Lightning's `ddp` children, SLURM tasks)."""
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert "test/acc" in run_once(compose_experiment)
    written = {p.name for p in run_dir(tmp_path).iterdir()}
    assert not written & {"config.yaml", "provenance.json", "metrics.json"}


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

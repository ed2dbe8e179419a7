"""Resuming a killed training stage: the continuation computes what an uninterrupted run computes,
and a damaged checkpoint is reported with its path and the way out."""

import pytest
import torch
from torch import nn

from thesis.core import train
from thesis.core.data import DigitsDataModule, ResumableDataLoader
from thesis.core.errors import CheckpointError
from thesis.core.experiment import apply_scale, execute
from thesis.core.modules import ClassificationModule
from thesis.core.rundir import RunDir
from thesis.core.seeding import seed_everything

CRASH_STEP = 7  # after the checkpoint of step 5, inside the first epoch (34 batches of 32)


class Crash(RuntimeError):
    pass


def train_stage(cfg, path, crash_at=None, monkeypatch=None):
    """Fit a dropout MLP on digits for one epoch; optionally die at global step `crash_at`."""
    seed_everything(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Dropout(0.3), nn.Linear(64, 10))
    module = ClassificationModule(model, lr=3e-3)
    if crash_at is not None:
        def crash(self, trainer, *args):
            if trainer.global_step == crash_at:
                raise Crash(f"killed at step {crash_at}")
        monkeypatch.setattr(train.FiniteLossGuard, "on_train_batch_end", crash)
    train.fit(module, DigitsDataModule(batch_size=32), cfg, RunDir(path), test=False, max_epochs=2,
              limit_train_batches=1.0, limit_val_batches=0)
    return module.state_dict()


@pytest.fixture
def stage_cfg(compose_experiment):
    return apply_scale(compose_experiment("condcomp_dense_digits", "checkpoint_every_n_steps=5", "logger=none"))


def test_killed_stage_resumes_to_identical_weights(stage_cfg, tmp_path, monkeypatch):
    """Dropout (random generator) and shuffling (loader position) both continue exactly."""
    uninterrupted = train_stage(stage_cfg, tmp_path / "a")
    with pytest.raises(Crash):
        train_stage(stage_cfg, tmp_path / "b", crash_at=CRASH_STEP, monkeypatch=monkeypatch)
    last = tmp_path / "b" / "checkpoints" / "train" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 5
    monkeypatch.undo()
    resumed = train_stage(stage_cfg, tmp_path / "b")
    for key, value in uninterrupted.items():
        assert torch.equal(value, resumed[key]), key


def test_resume_without_saved_state_would_differ(stage_cfg, tmp_path, monkeypatch):
    """Control: dropping what ResumeState saves makes the continuation diverge, so the test above
    measures something."""
    uninterrupted = train_stage(stage_cfg, tmp_path / "a")
    with pytest.raises(Crash):
        train_stage(stage_cfg, tmp_path / "b", crash_at=CRASH_STEP, monkeypatch=monkeypatch)
    monkeypatch.undo()
    last = tmp_path / "b" / "checkpoints" / "train" / "last.ckpt"
    checkpoint = torch.load(last, weights_only=True)
    del checkpoint[train.ResumeState.KEY]
    torch.save(checkpoint, last)
    resumed = train_stage(stage_cfg, tmp_path / "b")
    assert any(not torch.equal(value, resumed[key]) for key, value in uninterrupted.items())


def test_loader_replays_the_rest_of_its_epoch():
    data = torch.utils.data.TensorDataset(torch.arange(20))
    from thesis.core.data import training_loader

    torch.manual_seed(0)
    loader = training_loader(data, batch_size=4, num_workers=0)
    batches = iter(loader)
    seen = [next(batches)[0].tolist() for _ in range(2)]
    state = loader.state_dict()
    rest = [b[0].tolist() for b in batches]
    replay = training_loader(data, batch_size=4, num_workers=0)
    replay.load_state_dict(state)
    generator_before = torch.get_rng_state()
    assert [b[0].tolist() for b in replay] == rest
    assert torch.equal(torch.get_rng_state(), generator_before)  # replaying draws nothing
    assert state["served"] == 2 and len(seen) == 2
    assert isinstance(replay, ResumableDataLoader)


def test_truncated_checkpoint_names_file_and_fix(compose_experiment, tmp_path):
    name = "condcomp_dense_digits"
    execute(compose_experiment(name), name)
    (run,) = (tmp_path / "outputs" / name).iterdir()
    last = run / "checkpoints" / "train" / "last.ckpt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    (run / "metrics.json").unlink()
    with pytest.raises(CheckpointError, match=rf"{last} is corrupt or truncated .*delete it .* force=true"):
        execute(compose_experiment(name), name)
    assert execute(compose_experiment(name, "force=true"), name)["test/acc"] >= 0

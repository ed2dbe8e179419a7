"""The comparison runner's choices: which parts run, which stages runs share, what -m sweeps."""

import itertools
import json

import pytest
from omegaconf import OmegaConf

from thesis.acm.pipeline import selected_parts
from thesis.acm.shared_stages import prefix_hash, shared_stages
from thesis.core.compose import CONFIG_DIR
from thesis.core.errors import ConfigError
from thesis.core.experiment import apply_scale, execute


def method_with(compose_experiment, name="acm_mini", *overrides):
    return apply_scale(compose_experiment(name, *overrides)).method


@pytest.mark.parametrize(("overrides", "message"), [
    (["method.parts=[dense,acm,moe]"], "unknown \\['moe'\\]"),
    (["method.parts=[acm]"], "must include dense"),
    (["method.parts=[dense,ztw]", "method.claims=null"], "no ztw section"),
    (["method.parts=[dense,moefication]"], "add acm to method.parts or set method.claims=null"),
    (["method.acm.betas=[0.75]", "smoke.method.acm.betas=[0.75]"], "r5_betas \\[0.4, 0.6\\]"),
])
def test_bad_parts_fail_before_training_with_the_fix(compose_experiment, overrides, message):
    with pytest.raises(ConfigError, match=message):
        selected_parts(method_with(compose_experiment, "acm_mini", *overrides))


def test_default_parts_are_what_the_comparisons_ran_before(compose_experiment):
    assert selected_parts(method_with(compose_experiment, "acm_mini")) == {"dense", "acm", "static", "moefication"}
    assert selected_parts(method_with(compose_experiment, "acm_vitb")) == {"dense", "acm", "moefication", "ztw", "avit"}


@pytest.mark.parametrize(("name", "parts"), [("dense_vitb", {"dense"}), ("moefication_vitb", {"dense", "moefication"}),
                                             ("ztw_vitb", {"dense", "ztw"}), ("avit_vitb", {"dense", "avit"})])
def test_each_baseline_experiment_runs_only_its_baseline(compose_experiment, name, parts):
    assert selected_parts(method_with(compose_experiment, name)) == parts


def test_shared_stages_ignore_stage_three_and_later_settings(compose_experiment):
    def key(*overrides):
        return prefix_hash(apply_scale(compose_experiment("acm_mini_ablation", *overrides)))

    first = key()
    assert key("method.acm.stage3.alpha_e=0", "method.acm.betas=[0.4]", "smoke.method.acm.betas=[0.4]") == first
    assert key("method.parts=[dense,acm,static]", "method.epochs.acm_stage3=3", "method.analysis.bins=5") == first
    assert key("seed=1") != first
    assert key("method.acm.stage1.lr=0.5") != first
    assert key("method.epochs.acm_stage2=2") != first
    assert key("smoke.data.num_train=128") != first


def test_forced_run_retrains_the_shared_stages(compose_experiment):
    cfg = apply_scale(compose_experiment("acm_mini_ablation"))
    with shared_stages(cfg) as stages:
        (stages.checkpoint_dir / "base").mkdir(parents=True)
    assert OmegaConf.load(stages.config_path).method.acm.stage1.lr == cfg.method.acm.stage1.lr
    with shared_stages(cfg) as again:
        assert again.path == stages.path and (again.checkpoint_dir / "base").is_dir()
    cfg.force = True
    with shared_stages(cfg):
        assert not (stages.checkpoint_dir / "base").exists()


SWEEPS = ("acm_vitb_sweep", "acm_mini_ablation")


def sweep_params(name: str) -> dict[str, list[str]]:
    """The values `-m` sweeps per key, as the experiment file's hydra.sweeper.params lists them."""
    params = OmegaConf.load(CONFIG_DIR / "experiment" / f"{name}.yaml").hydra.sweeper.params
    return {key: str(values).split(",") for key, values in params.items()}


@pytest.mark.parametrize("name", SWEEPS)
@pytest.mark.parametrize("scale", ["paper", "smoke"])
def test_every_swept_value_reaches_the_run_config_at_both_scales(compose_experiment, name, scale):
    """-m composes one run per combination; the smoke block must not mask what the sweep sets."""
    params = sweep_params(name)
    configs = set()
    for combination in itertools.product(*params.values()):
        overrides = [f"{key}={value}" for key, value in zip(params, combination)]
        cfg = apply_scale(compose_experiment(name, *overrides, scale=scale))
        OmegaConf.resolve(cfg)
        for key, value in zip(params, combination):
            assert OmegaConf.select(cfg, key) == float(value)
        configs.add(json.dumps(OmegaConf.to_container(cfg), sort_keys=True))
        if name == "acm_vitb_sweep":
            assert list(cfg.method.acm.betas) == [float(combination[0])]
    assert len(configs) == len(list(itertools.product(*params.values())))


@pytest.mark.slow
def test_ablation_runs_share_base_and_stages_one_two(compose_experiment, tmp_path):
    """Two runs of the loss ablation: the second loads the shared stages the first trained."""
    name = "acm_mini_ablation"
    small = ["smoke.data.num_test=32"]
    execute(compose_experiment(name, *small), name)
    stages = tmp_path / "outputs" / ".stages"
    (shared,) = [p for p in stages.iterdir() if p.is_dir()]
    checkpoints = {p: p.stat().st_mtime_ns for p in shared.glob("checkpoints/*/last.ckpt")}
    assert {p.parent.name for p in checkpoints} == {"base", "acm_stage1", "acm_stage2"}
    execute(compose_experiment(name, *small, "method.acm.stage3.alpha_e=0"), name)
    assert [p for p in stages.iterdir() if p.is_dir()] == [shared]
    assert {p: p.stat().st_mtime_ns for p in shared.glob("checkpoints/*/last.ckpt")} == checkpoints
    runs = sorted((tmp_path / "outputs" / name).iterdir())
    assert len(runs) == 2
    tables = [(run / "tables" / "cost_vs_acc.csv").read_text().splitlines() for run in runs]
    shared_rows = [[line for line in table if not line.startswith("acm,")] for table in tables]
    assert shared_rows[0] == shared_rows[1]  # dense and the stage-1 sanity check: same weights
    for run in runs:
        assert (run / "tables" / "compute_histograms.csv").is_file()
        assert not (run / "checkpoints" / "acm_stage1").exists()
    # stage 1 was trained once, so its distillation errors are measured once, by the run that trained it
    assert sum((run / "tables" / "distill_errors.csv").is_file() for run in runs) == 1

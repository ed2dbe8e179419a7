"""Every experiment file composes at both scales and runs end to end at scale=smoke.

Parametrised over configs/experiment/*.yaml, so a new experiment is tested without a new test.
"""

import json

import pytest
from omegaconf import OmegaConf

from thesis.core.compose import experiments, options
from thesis.core.experiment import apply_scale, execute

EXPERIMENTS = experiments()
#: variants whose smoke retraces a path another experiment's smoke already runs in the default
#: suite (acm_mini, acm_vitb, moegt_atlas, semcom_curves) and would push the suite past its time: `make test-slow`
SLOW_SMOKE = {"acm_mini_e30", "acm_mini_gate_lr", "acm_mini_ablation", "acm_vitb_sweep",
              "semcom_mini", "semcom_lyapunov", "semcom_mnv3",
              "ceramics_synth_smoke", "ceramics_mini_long",  # the runner of ceramics_mini
              # runners covered in the default suite by ceramics_resnet18_scratch / ceramics_gradcam
              "ceramics_cv_deit_small", "ceramics_cv_resnet18", "ceramics_deit_small_pretrained",
              "ceramics_deit_small_scratch", "ceramics_resnet18_pretrained", "ceramics_fabric_examples",
              "ceramics_gradcam_rotation", "ceramics_misclassified", "ceramics_vit_attention",
              "sinks_mask_humaneval", "spare_gemma2_nqswap", "resid_probe_gemma2_nqswap",
              "semcom_flops_gain", "semcom_visualize", "moegt_mini_noload",
              # the same runners as spare_llama3_nqswap / spare_gemma2_nqswap / resid_probe_llama3_nqswap
              "spare_llama2_nqswap", "spare_llama2_macnoise", "spare_llama3_macnoise", "spare_gemma2_macnoise",
              "resid_probe_llama2_nqswap", "resid_probe_llama2_macnoise",
              "kv_ea_aime25",  # the runner of kv_ea_math500
              "moegt_gcn_feature_hiding", "moegt_dm_groups_mgt",  # nine / three trainings; moegt_dm_groups_gcn stays
              "sinks_dream", "sinks_mmada", "sinks_eps_sweep",  # the runner of sinks_llada
              # the runners of spare_layerwise_llama3_nqswap, spare_mi_distribution_llama3_nqswap,
              # resid_select_probe_llama3_nqswap and prepare_memorised_llama3_nqswap
              "spare_layerwise_gemma2_nqswap", "spare_mi_distribution_llama2_nqswap",
              "spare_mi_distribution_gemma2_nqswap", "resid_select_probe_llama2_nqswap",
              "resid_select_probe_llama2_macnoise", "resid_select_probe_llama3_macnoise",
              "prepare_memorised_llama3_macnoise", "prepare_memorised_llama2_nqswap",
              "prepare_memorised_llama2_macnoise", "prepare_memorised_gemma2_nqswap",
              "prepare_memorised_gemma2_macnoise",
              # press sweeps through evaluate_presses (kv_smoke, kv_knorm_needle, kv_qfilters_ruler smoke it)
              "kv_knorm_longbench", "kv_qfilters_needle", "kv_ea_ruler", "kv_ea_needle", "kv_ea_needle_ratio",
              "kv_ea_baseline_sweep",
              "kv_knorm_lm_code", "kv_knorm_lm_skip_layers",  # the runner of kv_knorm_lm_wikipedia
              "kv_mini_gpu_r2",  # the runner of kv_mini
              "alast_mini_r2"}  # the runner of alast_mini
SLOW_SMOKE_PREFIXES = ("moegt_ablation_",)
#: `<name>_gpu` is `<name>` at GPU sizes: at smoke scale both run the same tiny twin
SLOW_SMOKE_SUFFIXES = ("_gpu",)


def is_slow(name: str) -> bool:
    return name in SLOW_SMOKE or name.startswith(SLOW_SMOKE_PREFIXES) or name.endswith(SLOW_SMOKE_SUFFIXES)


SMOKE_CASES = [pytest.param(name, marks=pytest.mark.slow) if is_slow(name) else name for name in EXPERIMENTS]


def test_there_are_experiments():
    assert "condcomp_mini" in EXPERIMENTS


@pytest.mark.parametrize("name", EXPERIMENTS)
@pytest.mark.parametrize("scale", ["paper", "smoke"])
def test_composes(name, scale, compose_experiment):
    cfg = apply_scale(compose_experiment(name, scale=scale))
    assert cfg.scale.name == scale
    assert OmegaConf.is_struct(cfg)
    for group in ("model", "data", "method"):
        assert cfg[group] is not None, f"{name} leaves {group} unset"
    assert cfg.method.runner


@pytest.mark.parametrize("name", SMOKE_CASES)
def test_smoke_runs_end_to_end(name, compose_experiment, tmp_path):
    cfg = compose_experiment(name)
    metrics = execute(cfg, name, [f"experiment={name}", "scale=smoke"])
    assert metrics, f"{name} returned no metrics"
    (run_dir,) = (tmp_path / "outputs" / name).iterdir()
    assert json.loads((run_dir / "metrics.json").read_text()) == metrics
    provenance = json.loads((run_dir / "provenance.json").read_text())
    assert provenance["scale"] == "smoke" and provenance["experiment"] == name
    assert "end_time" in provenance and provenance["packages"]["torch"]
    assert OmegaConf.load(run_dir / "config.yaml").scale.name == "smoke"


def test_group_options_exist():
    for group in ("model", "data", "method", "hardware", "trainer", "logger", "paths", "scale"):
        assert options(group), f"configs/{group}/ is empty"

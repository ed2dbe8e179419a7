"""The SpARE sweeps (Figs. 5.5, 5.10-5.13): the N-sweep subsample and vectors, the cumulative MI
curve against Eq. 5.5, the layer list, and a layer-wise run that edits exactly the requested layers."""

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from thesis.core.errors import ConfigError
from thesis.spare.pipeline import Collected, layer_vectors
from thesis.spare.sae import SparseAutoencoder
from thesis.spare.selection import mi_mass_count
from thesis.spare.sweep_runners import n_sweep_vectors
from thesis.spare.sweeps import latents_for_share, mi_curve, subsample, sweep_layers


def planted_collection(n: int = 60, d: int = 8, seed: int = 0) -> Collected:
    """Examples whose behaviour (1 = context, 0 = memory, -1 = neither) shifts the first coordinate."""
    rng = np.random.default_rng(seed)
    label = rng.choice([1, 0, -1], size=n, p=[0.45, 0.45, 0.1])
    acts = rng.normal(size=(n, d)).astype(np.float32)
    acts[:, 0] += 3.0 * (label == 1)
    return Collected({3: torch.tensor(acts)}, [f"p{i}" for i in range(n)], label,
                     rng.uniform(0.5, 2, n), rng.uniform(0.5, 2, n))


def relu_sae(d: int = 8, n: int = 16) -> SparseAutoencoder:
    sae = SparseAutoencoder(d, n, activation="relu")
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        sae.W_enc.copy_(torch.randn(d, n, generator=generator))
        sae.W_dec.copy_(torch.randn(n, d, generator=generator))
    return sae.eval()


CFG = OmegaConf.create({"seed": 0, "method": {"K": 0.5, "weighting": "code", "mi_jobs": 1},
                        "model": {"sae": {"code": "relu"}}})


def test_subsample_at_or_above_the_labelled_count_is_every_labelled_example_in_order():
    collected = planted_collection()
    labelled = np.flatnonzero(collected.label >= 0)
    for n in (len(labelled), 10 ** 6):
        part = subsample(collected, n, seed=1)
        assert np.array_equal(part.label, collected.label[labelled])
        assert torch.equal(part.acts[3], collected.acts[3][torch.as_tensor(labelled)])
        assert part.predictions == [collected.predictions[i] for i in labelled]


def test_subsample_is_balanced_ordered_and_seeded():
    collected = planted_collection()
    part = subsample(collected, 10, seed=1)
    assert (part.label == 1).sum() == 5 and (part.label == 0).sum() == 5
    rows = [collected.predictions.index(p) for p in part.predictions]
    assert rows == sorted(rows)
    assert part.predictions == subsample(collected, 10, seed=1).predictions
    assert part.predictions != subsample(collected, 10, seed=2).predictions


@pytest.mark.parametrize("varied", ["mi", "means"])
def test_n_sweep_with_every_example_equals_the_plain_spare_vectors(varied):
    collected, saes = planted_collection(), {3: relu_sae()}
    full = {3: layer_vectors(collected, saes[3], 3, 0.5, "code", "relu", 0)}
    given = n_sweep_vectors(CFG, collected, subsample(collected, 10 ** 6, 0), saes, full, varied)
    assert torch.equal(given[3].z_context, full[3].z_context) and torch.equal(given[3].z_memory, full[3].z_memory)
    assert given[3].context_latents == full[3].context_latents and given[3].memory_latents == full[3].memory_latents


def test_n_sweep_varies_only_the_named_part():
    collected, saes = planted_collection(n=200), {3: relu_sae()}
    full = {3: layer_vectors(collected, saes[3], 3, 0.5, "code", "relu", 0)}
    subset = subsample(collected, 12, 0)
    means = n_sweep_vectors(CFG, collected, subset, saes, full, "means")[3]
    assert np.array_equal(means.mi, full[3].mi)  # ranking from every example
    mi = n_sweep_vectors(CFG, collected, subset, saes, full, "mi")[3]
    own = layer_vectors(subset, saes[3], 3, 0.5, "code", "relu", 0)
    assert np.array_equal(mi.mi, own.mi) and not np.array_equal(mi.mi, full[3].mi)  # ranking from the subset
    with torch.no_grad():  # means over every context example (code weights), on the subset's support
        Z = saes[3].code(collected.acts[3], "relu").numpy().astype(np.float64)
    is_c = collected.label == 1
    w = collected.loss_memory[is_c] / (collected.loss_context[is_c] + collected.loss_memory[is_c])
    expected = (w / w.sum()) @ Z[is_c]
    assert mi.context_latents
    assert np.allclose(mi.z_context.numpy()[mi.context_latents], expected[mi.context_latents], rtol=1e-5)
    with pytest.raises(ValueError, match="n_sweep_varied"):
        n_sweep_vectors(CFG, collected, subset, saes, full, "latents")


def test_mi_curve_known_values_and_eq_5_5():
    k, share = mi_curve(np.array([1.0, 3.0, 0.0, 6.0]))
    assert k.tolist() == [1, 2, 3, 4] and np.allclose(share, [0.6, 0.9, 1.0, 1.0])
    assert latents_for_share(np.array([1.0, 3.0, 0.0, 6.0]), [0.5, 0.6, 0.61, 0.95]) == [1, 1, 2, 3]
    assert mi_curve(np.array([1.0, 3.0, 0.0, 6.0]), max_k=2)[1].tolist() == pytest.approx([0.6, 0.9])
    assert len(mi_curve(np.zeros(5))[0]) == 0 and latents_for_share(np.zeros(5), [0.1]) == [0]
    mi = np.random.default_rng(0).exponential(size=500)
    Ks = [0.01, 0.05, 0.07, 0.3, 0.99]
    assert latents_for_share(mi, Ks) == [mi_mass_count(mi, K) for K in Ks]


def test_sweep_layers():
    assert sweep_layers("all", 4) == [0, 1, 2, 3]
    assert sweep_layers([2, 0], 4) == [2, 0]
    with pytest.raises(ConfigError, match="outside 0..3"):
        sweep_layers([1, 4], 4)


@pytest.mark.slow  # about 15 s: fixture model, collection and generation
def test_layerwise_run_edits_exactly_the_requested_layers_one_at_a_time(compose_experiment, monkeypatch, tmp_path):
    from thesis.core.experiment import apply_scale
    from thesis.core.rundir import RunDir
    from thesis.spare import study, sweep_runners

    cfg = apply_scale(compose_experiment("spare_layerwise_llama3_nqswap", "smoke.method.sweep_layers=[2]",
                                         "smoke.data.demo_seeds=[42]", "smoke.data.max_test=4"))
    loaded, edited = [], []
    real_load, real_generate = sweep_runners.load_saes, study.generate
    monkeypatch.setattr(sweep_runners, "load_saes", lambda sae, layers, device: loaded.append(list(layers))
                        or real_load(sae, layers, device))

    def recording_generate(*args, edits=None, **kwargs):
        edited.append(sorted(edits) if edits else [])
        return real_generate(*args, edits=edits, **kwargs)

    monkeypatch.setattr(study, "generate", recording_generate)
    run = RunDir(tmp_path / "run")
    metrics = sweep_runners.run_spare_layerwise(cfg, run)
    assert loaded == [[2]]
    assert edited == [[], [2], [2]]  # unsteered once, then to context and to memory at layer 2 only
    assert {"layer2/em_c", "layer2/em_m", "no_control/em_c"} <= set(metrics)
    assert (run.figures_dir / "layerwise.png").is_file()


def test_fig5_4_points_keep_each_family_at_its_best_cell_over_seed_means(tmp_path):
    import pandas as pd

    from thesis.spare.detail_figure import method_family, plot_fig5_4, scatter_points

    assert [method_family(m) for m in ("spare_full", "spare_add_only", "actadd_l13_a0.5", "taskvec_l14",
                                       "sea_sqexp_l15", "dola_low", "dola_l2-4", "icl", "no_control")] == \
        ["spare", "spare_add_only", "actadd", "taskvec", "sea_sqexp", "dola", "dola", "icl", "no_control"]
    base = {"em_c": 10.0, "em_m": 20.0, "em_m_to_m": 50.0, "em_c_to_c": 50.0, "off_target_m_when_to_c": 0.0,
            "off_target_c_when_to_m": 0.0}
    rows = []
    for method, pair in {"actadd_l13_a1.0": (10, 10), "actadd_l14_a1.0": (30, 30), "spare_full": (40, 50)}.items():
        for seed, shift in ((42, -5), (43, 5)):
            rows.append({"model": "llama3_8b", "method": method, "demo_seed": seed, "em_rule": "exact", **base,
                         "em_c_to_m": pair[0] + shift, "em_m_to_c": pair[1]})
    rows.append({**rows[0], "em_rule": "substring_of_context", "em_c_to_m": 99.0})
    points = scatter_points(pd.DataFrame(rows)).set_index("family")
    assert set(points.index) == {"actadd", "spare"}
    assert points.loc["actadd", "method"] == "actadd_l14_a1.0" and points.loc["actadd", "em_c_to_m"] == 30
    assert points.loc["spare", "em_c_to_m"] == 40 and points.loc["spare", "em_m_to_c"] == 50
    plot_fig5_4(points.reset_index(), tmp_path / "fig5_4")
    assert (tmp_path / "fig5_4.png").is_file()


@pytest.mark.slow  # about 6 s: fixture model and two probe seeds per layer and kind
def test_selection_only_probe_run_skips_the_conflict_probe(compose_experiment, tmp_path):
    import pandas as pd

    from thesis.core.experiment import apply_scale
    from thesis.core.rundir import RunDir
    from thesis.spare.resid_runner import run_resid_probe

    run = RunDir(tmp_path / "run")
    metrics = run_resid_probe(apply_scale(compose_experiment("resid_select_probe_llama3_nqswap")), run)
    probe = pd.read_csv(run.path / "tables" / "probe.csv")
    assert set(probe.task) == {"selection"} and set(probe.kind) == {"hidden", "mlp", "attn"}
    assert "selection/hidden/peak_auroc" in metrics and not any(k.startswith("conflict/") for k in metrics)

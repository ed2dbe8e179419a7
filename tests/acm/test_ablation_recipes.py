"""The loss-ablation recipes (Fig. 3.9 histograms, claims R6-R7) on tables shaped as the collector
writes them, with values chosen so the verdicts are known."""

import pandas as pd
import torch

from thesis import results as pipeline
from thesis.acm.analysis import compute_histograms, distillation_error_rows


def ablation_runs(entropy_only: float, std_only: float, entropy_all: float, std_all: float) -> pd.DataFrame:
    rows = []
    for seed in (0, 1):
        for losses, entropy, spread in (("L_b", entropy_only, std_only), ("L_b+L_e+L_d", entropy_all, std_all),
                                        ("L_b+L_d", 0.3, 0.01)):
            rows.append({"experiment": "acm_mini_ablation", "run": f"{losses}{seed}", "seed": seed, "scale": "paper",
                         "acm/losses": losses, "acm/beta=0.6/acc": 0.8, "acm/beta=0.6/compute": 0.6,
                         "acm/beta=0.6/choice_entropy": entropy, "acm/beta=0.6/image_compute_std": spread})
    return pd.DataFrame(rows)


def distill_errors(two_close: bool) -> pd.DataFrame:
    errors = torch.ones(2, 5, 4)
    errors[..., 1] = 1.5 if two_close else 3.0  # n=2 against n=4 (1.0): within 2x, or not
    return pd.DataFrame(distillation_error_rows({"blocks.0.mlp": errors})).assign(
        experiment="acm_mini_ablation", run="a", seed=0, scale="paper")


def write(tmp_path, runs: pd.DataFrame, errors: pd.DataFrame) -> None:
    folder = tmp_path / "acm_mini_ablation"
    folder.mkdir(exist_ok=True)
    runs.to_csv(folder / "runs.csv", index=False)
    errors.to_csv(folder / "distill_errors.csv", index=False)


def verdicts(tmp_path) -> dict[str, str]:
    (table,) = pipeline.recipes()["acm_loss_ablation"].render(tmp_path)
    lines = [line.split(" | ") for line in table.read_text().splitlines() if line.startswith("| acm_mini_ablation")]
    return {cells[1]: cells[-1].rstrip(" |") for cells in lines}


def test_r6_and_r7_hold_when_the_losses_spread_compute(tmp_path):
    write(tmp_path, ablation_runs(0.1, 0.01, 0.6, 0.03), distill_errors(two_close=True))
    assert verdicts(tmp_path) == {name: "reproduced" for name in ("R6a", "R6b", "R6c", "R6d", "R7")}


def test_r6_and_r7_fail_when_they_do_not(tmp_path):
    write(tmp_path, ablation_runs(0.3, 0.01, 0.4, 0.015), distill_errors(two_close=False))
    assert verdicts(tmp_path) == {"R6a": "NOT reproduced", "R6b": "reproduced", "R6c": "NOT reproduced",
                                  "R6d": "NOT reproduced", "R7": "NOT reproduced"}


def test_histogram_figure_draws_every_variant(tmp_path):
    maps = torch.rand(6, 10, generator=torch.Generator().manual_seed(0))
    rows = [{"beta_target": 0.6, "losses": losses, **row} for losses in ("L_b", "L_b+L_e+L_d")
            for row in compute_histograms(maps, bins=10)]
    folder = tmp_path / "acm_mini_ablation"
    folder.mkdir()
    pd.DataFrame(rows).assign(experiment="acm_mini_ablation", run="a", seed=0).to_csv(
        folder / "compute_histograms.csv", index=False)
    written = pipeline.recipes()["acm_compute_histograms"].render(tmp_path)
    assert [p.name for p in written] == ["acm_compute_histograms.png", "acm_compute_histograms.pdf"]

"""The Fig. 3.6 recipe renders from a distill_errors table as the collector writes it."""

import pandas as pd
import torch

from thesis import results as pipeline
from thesis.acm.analysis import distillation_error_rows


def test_recipe_draws_one_heatmap_per_module(tmp_path):
    generator = torch.Generator().manual_seed(0)
    errors = {f"blocks.{i}.mlp": torch.rand(3, 5, 4, generator=generator) for i in range(3)}
    rows = pd.DataFrame(distillation_error_rows(errors))
    runs = [rows.assign(experiment="acm_mini_ablation", run=run, seed=0, scale="paper") for run in ("b", "a")]
    table = tmp_path / "acm_mini_ablation" / "distill_errors.csv"
    table.parent.mkdir()
    pd.concat(runs).to_csv(table, index=False)
    written = pipeline.recipes()["acm_distill_errors"].render(tmp_path)
    assert [p.name for p in written] == ["acm_distill_errors.png", "acm_distill_errors.pdf"]
    assert all(p.stat().st_size > 0 for p in written)

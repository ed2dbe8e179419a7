"""The results pipeline: collect run dirs into long-form CSVs, render recipes, write the index."""

import shutil

import pandas as pd
import pytest

from thesis import results as pipeline
from thesis.core.rundir import RunDir


def fake_run(outputs, experiment, name, seed, scale, acc):
    run = RunDir(outputs / experiment / name)
    run.write_provenance({"seed": seed, "scale": scale, "git": {"commit": "abc", "dirty": False}})
    run.write_table("curve", [{"t": 0.5, "acc": acc}, {"t": 0.9, "acc": acc + 0.01}])
    run.write_metrics({"test/acc": acc})


def test_collect_writes_long_form_rows_without_smoke_runs(tmp_path):
    outputs, results = tmp_path / "outputs", tmp_path / "results"
    fake_run(outputs, "exp", "h1", 1, "paper", 0.8)
    fake_run(outputs, "exp", "h0", 0, "paper", 0.7)
    fake_run(outputs, "exp", "hs", 0, "smoke", 0.1)
    pipeline.collect(outputs, results)
    runs = pd.read_csv(results / "exp" / "runs.csv")
    assert runs.seed.tolist() == [0, 1] and runs["test/acc"].tolist() == [0.7, 0.8]
    curve = pd.read_csv(results / "exp" / "curve.csv")
    assert list(curve.columns[:6]) == list(pipeline.RUN_COLUMNS)
    assert curve.acc.tolist() == [0.7, 0.71, 0.8, 0.81]
    first = (results / "exp" / "curve.csv").read_text()
    pipeline.collect(outputs, results)
    assert (results / "exp" / "curve.csv").read_text() == first  # re-collecting is stable


def test_collecting_a_new_seed_keeps_the_seeds_collected_before(tmp_path):
    outputs, results = tmp_path / "outputs", tmp_path / "results"
    fake_run(outputs, "exp", "h0", 0, "paper", 0.7)
    pipeline.collect(outputs, results)
    shutil.rmtree(outputs / "exp" / "h0")  # seed 0's run directory is gone, its rows are committed
    fake_run(outputs, "exp", "h1", 1, "paper", 0.8)
    pipeline.collect(outputs, results)
    assert pd.read_csv(results / "exp" / "runs.csv")["test/acc"].tolist() == [0.7, 0.8]
    assert pd.read_csv(results / "exp" / "curve.csv").acc.tolist() == [0.7, 0.71, 0.8, 0.81]
    fake_run(outputs, "exp", "h1", 1, "paper", 0.9)  # a rerun of a run replaces its rows
    pipeline.collect(outputs, results)
    assert pd.read_csv(results / "exp" / "runs.csv")["test/acc"].tolist() == [0.7, 0.9]
    pipeline.collect(outputs, results, replace=True)
    assert pd.read_csv(results / "exp" / "runs.csv")["test/acc"].tolist() == [0.9]


def test_recipe_with_missing_inputs_says_what_to_run(tmp_path):
    recipe = next(iter(pipeline.recipes().values()))
    with pytest.raises(FileNotFoundError, match="make collect"):
        recipe.render(tmp_path)


@pytest.mark.parametrize("recipe_id", sorted(pipeline.recipes()))
def test_every_recipe_rebuilds_from_committed_csvs(recipe_id, tmp_path):
    recipe = pipeline.recipes()[recipe_id]
    if not all((pipeline.RESULTS_DIR / i).is_file() for i in recipe.inputs):
        pytest.skip(f"{recipe_id}: its CSVs are not committed yet")
    copy = tmp_path / "results"
    shutil.copytree(pipeline.RESULTS_DIR, copy)
    written = recipe.render(copy)
    assert written and all(p.is_file() and p.stat().st_size > 0 for p in written)


def test_markdown_table():
    text = pipeline.markdown_table(pd.DataFrame({"a": [1.23456, 2.0], "b": ["x", "y"]}))
    assert text.splitlines() == ["| a | b |", "|---|---|", "| 1.235 | x |", "| 2 | y |"]


def test_render_all_skips_recipes_without_csvs(tmp_path, capsys):
    assert pipeline.render_all("figure", tmp_path) == []
    assert "skipped condcomp_early_exit_curve" in capsys.readouterr().err


def test_collect_accepts_a_table_repeating_the_seed_and_refuses_a_conflicting_one(tmp_path):
    outputs, results = tmp_path / "outputs", tmp_path / "results"
    fake_run(outputs, "exp", "h0", 3, "paper", 0.7)
    run = outputs / "exp" / "h0"
    pd.DataFrame({"seed": [3, 3], "acc": [0.1, 0.2]}).to_csv(run / "tables" / "curve.csv", index=False)
    pipeline.collect(outputs, results)
    curve = pd.read_csv(results / "exp" / "curve.csv")
    assert list(curve.columns) == [*pipeline.RUN_COLUMNS, "acc"] and curve.seed.tolist() == [3, 3]
    pd.DataFrame({"seed": [4], "acc": [0.1]}).to_csv(run / "tables" / "curve.csv", index=False)
    with pytest.raises(ValueError, match="disagrees with the run's seed"):
        pipeline.collect(outputs, results)

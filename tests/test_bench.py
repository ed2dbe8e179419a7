"""The committed benchmark CSVs rebuild their figures and summaries without a GPU; the ALaST step
benchmark measures a tiny ViT on the CPU."""

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_acm_kernel_summary_rebuilds_from_the_csv(tmp_path):
    shutil.copy(ROOT / "results/bench/acm_kernel.csv", tmp_path)
    subprocess.run([sys.executable, "benchmarks/acm_kernel.py", "--plot-only", "--out", str(tmp_path)],
                   cwd=ROOT, check=True, capture_output=True)
    summary = (tmp_path / "acm_kernel.md").read_text()
    assert (tmp_path / "acm_kernel.png").stat().st_size > 0
    assert "latency ratio / compute ratio at c = 0.25" in summary
    assert "throughput / cuBLAS" in summary


def test_acm_vit_summary_rebuilds_from_the_csv(tmp_path):
    shutil.copy(ROOT / "results/bench/acm_vit.csv", tmp_path)
    subprocess.run([sys.executable, "benchmarks/acm_vit.py", "--plot-only", "--out", str(tmp_path)],
                   cwd=ROOT, check=True, capture_output=True)
    assert "| acm | 1 | staircase |" in (tmp_path / "acm_vit.md").read_text()
    assert (tmp_path / "acm_vit.png").stat().st_size > 0


def load_alast_step():
    spec = importlib.util.spec_from_file_location("alast_step", ROOT / "benchmarks/alast_step.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass resolves annotations through sys.modules
    spec.loader.exec_module(module)
    return module


TINY = ["--device", "cpu", "--depth", "2", "--width", "32", "--heads", "2", "--img-size", "32", "--patch", "4",
        "--batch", "2", "--steps", "1", "--warmup", "0", "--keeps", "1.0", "0.5"]


def test_alast_step_rows_follow_the_counted_flops():
    bench = load_alast_step()
    rows = bench.measure(bench.parse([*TINY, "--k", "2"]))  # K = depth: every block trains
    full, keep_all, compounding, of_original = rows
    assert [r["method"] for r in rows] == ["ft_full", "alast", "alast", "alast"]
    assert [r["keep_reference"] for r in rows[2:]] == ["current", "original"]
    assert all(r["memory_kind"] == "saved_tensors_proxy" and r["median_ms"] > 0 and r["peak_mb"] > 0 for r in rows)
    assert keep_all["flops"] == full["flops"] and keep_all["tokens_out"] == full["tokens_out"] == "65 65"
    assert compounding["tokens_out"] == "33 17" and of_original["tokens_out"] == "33 33"  # 64 patches, b = 0.5
    assert compounding["flops"] < of_original["flops"] < full["flops"]
    for r in rows:
        assert r["predicted_speedup"] == round(full["flops"] / r["flops"], 4)
        assert r["ratio"] == pytest.approx(r["measured_speedup"] / r["predicted_speedup"], abs=1e-3)
        assert r["target_met"] == ("" if r is full else "yes" if r["ratio"] >= bench.TARGET else "no")


def test_alast_step_writes_and_rebuilds_its_summary(tmp_path):
    bench = load_alast_step()
    bench.main([*TINY, "--k", "1", "--out", str(tmp_path)])
    rows = bench.read_csv(tmp_path / "alast_step.csv")
    assert {r["frozen_blocks"] for r in rows} == {"", "0", "1"}
    flops = {(r["layer_set"], r["keep"], r["keep_reference"]): int(r["flops"]) for r in rows}
    assert all(flops["frozen_bottom", b, ref] < flops["frozen_top", b, ref] < flops["all", "1.0", "current"]
               for b, ref in (("1.0", "current"), ("0.5", "current"), ("0.5", "original")))
    (tmp_path / "alast_step.md").unlink()
    bench.main(["--plot-only", "--out", str(tmp_path)])
    assert "Target met for" in (tmp_path / "alast_step.md").read_text()
    assert (tmp_path / "alast_step.png").stat().st_size > 0


TINY_KV = ["--device", "cpu", "--hidden", "64", "--intermediate", "128", "--heads", "4", "--kv-heads", "2", "--vocab",
           "100", "--layers", "2", "--contexts", "96", "--rounds", "1", "--decode-tokens", "2"]
OUR_PRESSES = {"knorm", "random", "streaming_llm", "snapkv", "tova", "qfilters", "expected_attention"}


def run_kv_benchmark(out: Path, pythonpath: str = "") -> list[dict]:
    import csv
    import os

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": pythonpath}
    subprocess.run([sys.executable, "benchmarks/kv_cache.py", *TINY_KV, "--out", str(out)], cwd=ROOT, check=True,
                   capture_output=True, env=env)
    return list(csv.DictReader((out / "kv_cache.csv").open()))


@pytest.mark.slow
def test_kv_cache_benchmark_measures_a_tiny_llama_and_keeps_the_requested_fraction(tmp_path):
    rows = run_kv_benchmark(tmp_path)
    prefill = {r["method"] for r in rows if r["measure"] == "prefill"}
    assert prefill == {"none", *OUR_PRESSES}
    kept = {float(r["ratio"]): float(r["kept_fraction"]) for r in rows if r["measure"] == "decode"}
    assert kept == {0.0: 1.0, 0.5: 0.5, 0.75: 0.25, 0.9: pytest.approx(10 / 96, abs=1e-6)}  # KNorm keeps ceil(96 x 0.1)
    assert all(float(r["tokens_per_s"]) > 0 for r in rows if r["measure"] == "decode")
    subprocess.run([sys.executable, "benchmarks/kv_cache.py", "--plot-only", "--out", str(tmp_path)],
                   cwd=ROOT, check=True, capture_output=True)
    assert "| 96 | prefill | repository | knorm | 0.5 |" in (tmp_path / "kv_cache.md").read_text()


@pytest.mark.kvpress
def test_kv_cache_benchmark_runs_kvpress_beside(tmp_path):
    """With kvpress importable (the side environment) each press also runs as kvpress's, in the same
    rounds, and kvpress's KNorm keeps floor(96 x 0.1) pairs where the repository's keeps the ceiling."""
    pytest.importorskip("kvpress", reason="kvpress 0.5.5 lives in the side environment .kvpress/ (make test-kvpress)")
    rows = run_kv_benchmark(tmp_path, str(ROOT / ".kvpress"))
    prefill = {r["method"] for r in rows if r["measure"] == "prefill"}
    assert prefill == {"none", *OUR_PRESSES, *("kvpress_" + name for name in OUR_PRESSES)}
    assert {r["series"] for r in rows if r["method"].startswith("kvpress_")} == {"kvpress"}
    kept = {float(r["ratio"]): float(r["kept_fraction"]) for r in rows
            if r["measure"] == "decode" and r["series"] == "kvpress"}
    assert kept == {0.0: 1.0, 0.5: 0.5, 0.75: 0.25, 0.9: pytest.approx(9 / 96, abs=1e-6)}
    assert rows[0]["kvpress"] == "0.5.5"

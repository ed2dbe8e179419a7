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


@pytest.mark.slow
def test_kv_cache_benchmark_measures_a_tiny_llama_and_keeps_the_requested_fraction(tmp_path):
    command = [sys.executable, "benchmarks/kv_cache.py", "--device", "cpu", "--hidden", "64", "--intermediate", "128",
               "--heads", "4", "--kv-heads", "2", "--vocab", "100", "--layers", "2", "--contexts", "96",
               "--rounds", "1", "--decode-tokens", "2", "--out", str(tmp_path)]
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True, env={**__import__("os").environ,
                                                                           "HF_HUB_OFFLINE": "1"})
    import csv

    rows = list(csv.DictReader((tmp_path / "kv_cache.csv").open()))
    prefill = {r["method"] for r in rows if r["measure"] == "prefill"}
    assert prefill == {"none", "knorm", "random", "streaming_llm", "snapkv", "tova", "qfilters", "expected_attention"}
    kept = {float(r["ratio"]): float(r["kept_fraction"]) for r in rows if r["measure"] == "decode"}
    assert kept == {0.0: 1.0, 0.5: 0.5, 0.75: 0.25, 0.9: pytest.approx(10 / 96, abs=1e-6)}  # KNorm keeps ceil(96 x 0.1)
    assert all(float(r["tokens_per_s"]) > 0 for r in rows if r["measure"] == "decode")
    subprocess.run([sys.executable, "benchmarks/kv_cache.py", "--plot-only", "--out", str(tmp_path)],
                   cwd=ROOT, check=True, capture_output=True)
    assert "| 96 | prefill | knorm | 0.5 |" in (tmp_path / "kv_cache.md").read_text()

"""Check, end to end, the promises of docs/reliability.md: `python scripts/reliability.py`.

Each scenario runs the launcher as a user would (`python -m thesis.run ...` in a subprocess, or
`execute` directly where only the numbers matter) inside a temporary directory, and checks one
promise: distributed runs report whole-set metrics and write their files once, sweeps run through
submitit and resume, a killed run resumes to the same metrics, results are never half-written,
and bad input stops with a one-line error that names the fix. A table of scenario / what was
tried / what held is printed at the end; the exit status is 1 if any scenario failed.
About 4 minutes on 2 CPU cores; no GPU, no network.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")

EXPERIMENT = "condcomp_dense_digits"
QUIET = ("logger=none", "trainer.enable_progress_bar=false")
TIMEOUT_S = 300


class Failed(Exception):
    """A promise that did not hold; the message says what was seen instead."""


def check(condition: bool, seen: str) -> None:
    if not condition:
        raise Failed(seen)


def launcher(out: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "thesis.run", *args, f"paths.output_dir={out}", *QUIET]


def launch(out: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(launcher(out, *args), capture_output=True, text=True, timeout=TIMEOUT_S)


def finished(out: Path) -> list[Path]:
    return sorted(out.glob("*/*/metrics.json"))


def only_metrics(out: Path) -> dict:
    runs = finished(out)
    check(len(runs) == 1, f"{len(runs)} finished runs under {out.name}, expected 1")
    return json.loads(runs[0].read_text())


def direct(out: Path, *overrides: str, scale: str = "smoke", experiment: str = EXPERIMENT) -> dict:
    """`execute` in this process (no interpreter start-up), as the tests call it."""
    from thesis.core.compose import compose
    from thesis.core.experiment import execute

    cfg = compose([f"experiment={experiment}", f"scale={scale}", f"paths.output_dir={out}", *QUIET, *overrides])
    return execute(cfg, experiment)


def wait_until(condition: Callable[[], bool], process: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not condition():
        if process.poll() is not None:
            raise Failed(f"the process ended before {what}")
        if time.monotonic() > deadline:
            process.kill()
            raise Failed(f"no {what} after {TIMEOUT_S} s")
        time.sleep(0.02)


def largest_difference(a: dict, b: dict) -> float:
    check(a.keys() == b.keys(), f"different metrics: {sorted(a)} vs {sorted(b)}")
    return max(abs(a[k] - b[k]) for k in a)


# --- scale out -----------------------------------------------------------------------------------


def ddp_evaluation(tmp: Path) -> str:
    untrained = "trainer.limit_train_batches=0"
    single = direct(tmp / "one", untrained)
    ddp = direct(tmp / "two", untrained, "hardware=ddp_cpu")
    gap = largest_difference(single, ddp)
    check(gap <= 1e-6, f"max |difference| {gap:.2e} > 1e-6")
    return f"same metrics: max |difference| {gap:.1e} over {', '.join(sorted(single))} (tolerance 1e-6)"


def ddp_training(tmp: Path) -> str:
    common = ("trainer.max_epochs=8",)
    single = direct(tmp / "one", *common, scale="paper")
    ddp = direct(tmp / "two", *common, "hardware=ddp_cpu", "data.batch_size=32", scale="paper")
    gap = abs(single["test/acc"] - ddp["test/acc"])
    check(gap <= 0.02, f"test/acc {single['test/acc']:.4f} vs {ddp['test/acc']:.4f}")
    return f"test/acc {single['test/acc']:.4f} vs {ddp['test/acc']:.4f} (|difference| {gap:.4f} <= 0.02)"


def ddp_relaunch_writes_once(tmp: Path) -> str:
    done = launch(tmp, f"experiment={EXPERIMENT}", "scale=smoke", "hardware=ddp_cpu", "hardware.strategy=ddp",
                  "trainer.limit_train_batches=0")
    check(done.returncode == 0, done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed")
    writers = done.stdout.count("run directory:")
    check(writers == 1, f"{writers} processes wrote the run directory")
    reference = direct(tmp / "one", "trainer.limit_train_batches=0")
    gap = largest_difference(reference, only_metrics(tmp))
    check(gap <= 1e-6, f"metrics differ from one process by {gap:.2e}")
    return f"1 writer of 2 processes; metrics.json matches one process (max |difference| {gap:.1e})"


def submitit_sweep(tmp: Path) -> str:
    done = launch(tmp, "-m", f"experiment={EXPERIMENT}", "scale=smoke", "seed=0,1", "hydra/launcher=submitit_local")
    check(done.returncode == 0, f"exit status {done.returncode}")
    seeds = sorted(json.loads((p.parent / "provenance.json").read_text())["seed"] for p in finished(tmp))
    check(seeds == [0, 1], f"finished runs for seeds {seeds}")
    return "2 jobs ran; run dirs for seeds 0 and 1 hold metrics.json"


# --- faults --------------------------------------------------------------------------------------


def killed_run_resumes(tmp: Path) -> str:
    import torch

    settings = (f"experiment={EXPERIMENT}", "trainer.max_epochs=2", "data.batch_size=16", "checkpoint_every_n_steps=5")
    out = tmp / "killed"
    process = subprocess.Popen(launcher(out, *settings), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoints = lambda: list(out.glob("*/*/checkpoints/train/last.ckpt"))  # noqa: E731
    wait_until(lambda: bool(checkpoints()), process, "a checkpoint")
    process.send_signal(signal.SIGKILL)
    process.wait()
    step = torch.load(checkpoints()[0], weights_only=True)["global_step"]
    check(step % 68 != 0, f"killed at an epoch end (step {step})")
    again = launch(out, *settings)
    check(again.returncode == 0 and "resuming stage 'train'" in again.stdout, "the rerun did not resume")
    uninterrupted = direct(tmp / "reference", *settings[1:], scale="paper")
    gap = largest_difference(uninterrupted, only_metrics(out))
    check(gap == 0.0, f"metrics differ from the uninterrupted run by up to {gap:.2e}")
    return f"killed at step {step} of 136 (mid-epoch); rerun resumed; all 6 metrics identical to an uninterrupted run"


def killed_sweep_reruns_missing(tmp: Path) -> str:
    sweep = launcher(tmp, "-m", f"experiment={EXPERIMENT}", "scale=smoke", "trainer.max_epochs=30", "seed=0,1")
    process = subprocess.Popen(sweep, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    wait_until(lambda: bool(finished(tmp)), process, "a finished run")
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    (first,) = finished(tmp)
    stamp = first.stat().st_mtime_ns
    again = subprocess.run(sweep, capture_output=True, text=True, timeout=TIMEOUT_S)
    check(again.returncode == 0, f"exit status {again.returncode}")
    skipped = again.stdout.count("skip: ")
    check(skipped == 1 and first.stat().st_mtime_ns == stamp, f"{skipped} runs skipped, finished run rewritten")
    check(len(finished(tmp)) == 2, f"{len(finished(tmp))} finished runs after the rerun")
    return "killed after run 1 of 2; the rerun skipped run 1 (metrics.json untouched) and ran run 2"


WRITER = """
import sys
from thesis.core.io import atomic_write_json

for version in range(10**6):
    atomic_write_json(sys.argv[1], {"version": version, "padding": "x" * 2_000_000})
"""


def killed_writer(tmp: Path) -> str:
    target = tmp / "metrics.json"
    whole = 0
    for delay in (0.05, 0.3, 0.6, 0.9, 1.2):
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(target)])
        time.sleep(delay)
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        if target.exists():
            try:
                json.loads(target.read_text())
            except ValueError:
                raise Failed("a half-written metrics.json") from None
            whole += 1
    check(whole > 0, "no write finished before the kills")
    return f"5 SIGKILLs while rewriting a 2 MB metrics.json: {whole} complete file(s), 0 partial"


# --- bad input -----------------------------------------------------------------------------------


def one_line_error(tmp: Path, args: tuple[str, ...], expected: str) -> str:
    done = launch(tmp, *args)
    lines = done.stderr.strip().splitlines()
    last = lines[-1] if lines else ""
    check(done.returncode == 2 and last.startswith("error: ") and expected in last,
          f"exit {done.returncode}: {last or 'no error line'}")
    return last[:150] + ("..." if len(last) > 150 else "")


def corrupt_checkpoint(tmp: Path) -> str:
    direct(tmp)
    (metrics,) = finished(tmp)
    last = metrics.parent / "checkpoints" / "train" / "last.ckpt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    metrics.unlink()
    return one_line_error(tmp, (f"experiment={EXPERIMENT}", "scale=smoke"), f"{last} is corrupt or truncated")


def gpu_on_cpu(tmp: Path) -> str:
    import torch

    if torch.cuda.is_available():
        return "skipped: this machine has a GPU"
    return one_line_error(tmp, (f"experiment={EXPERIMENT}", "scale=smoke", "hardware=ddp"), "use hardware=cpu")


def bad_input(args: tuple[str, ...], expected: str) -> Callable[[Path], str]:
    """A scenario that launches `args` ({tmp}: its temporary directory) and expects `expected`."""
    return lambda tmp: one_line_error(tmp, tuple(a.format(tmp=tmp) for a in args), expected)


SCENARIOS: list[tuple[str, str, Callable[[Path], str]]] = [
    ("DDP evaluation", "2 CPU processes (hardware=ddp_cpu) vs 1, same weights", ddp_evaluation),
    ("DDP training", "8 epochs digits: 2 processes x batch 32 vs 1 x 64", ddp_training),
    ("DDP run files", "Lightning `ddp` (re-runs the command line) on 2 CPU processes", ddp_relaunch_writes_once),
    ("submitit sweep", "-m seed=0,1 hydra/launcher=submitit_local", submitit_sweep),
    ("killed run", "SIGKILL after the first step checkpoint, same command again", killed_run_resumes),
    ("killed sweep", "SIGKILL a 2-run sweep after run 1, same sweep again", killed_sweep_reruns_missing),
    ("atomic results", "SIGKILL a process rewriting metrics.json", killed_writer),
    ("unknown experiment", "experiment=nope",
     bad_input(("experiment=nope",), "experiment=nope does not exist; valid experiment options")),
    ("unknown key", "foo=1", bad_input((f"experiment={EXPERIMENT}", "foo=1"), "unknown config key 'foo'")),
    ("wrong type", "trainer.max_epochs=abc",
     bad_input((f"experiment={EXPERIMENT}", "trainer.max_epochs=abc"), "set trainer.max_epochs to an integer")),
    ("wrong type", "seed=x", bad_input((f"experiment={EXPERIMENT}", "seed=x"), "set seed to an integer")),
    ("missing dataset", "paper-scale ImageNet run, empty paths.data_dir",
     bad_input(("experiment=condcomp_token_drop_vitb", "model.pretrained=false", "paths.data_dir={tmp}/data"),
               "scripts/prepare_imagenet.py")),
    ("missing weights", "model.checkpoint=<missing file>",
     bad_input(("experiment=condcomp_token_drop_vitb", "model.checkpoint={tmp}/weights/model.safetensors"),
               "not found: check model.checkpoint")),
    ("wrong architecture", "fixture ViT weights into a wider ViT (+model.embed_dim=64)",
     bad_input(("experiment=condcomp_token_drop_vitb", "scale=smoke", "+model.embed_dim=64"),
               "made for another architecture")),
    ("corrupt checkpoint", "truncated last.ckpt, metrics.json removed, rerun", corrupt_checkpoint),
    ("GPU setting on CPU", "hardware=ddp", gpu_on_cpu),
    ("NaN loss", "method.module.lr=1e30",
     bad_input((f"experiment={EXPERIMENT}", "scale=smoke", "method.module.lr=1e30"), "training loss became nan at global step")),
]


def main() -> int:
    rows = []
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="reliability-") as root:
        for index, (name, tried, scenario) in enumerate(SCENARIOS):
            workdir = Path(root) / f"{index:02d}"
            workdir.mkdir()
            began = time.monotonic()
            try:
                held, ok = scenario(workdir), True
            except Failed as exc:
                held, ok = f"FAILED: {exc}", False
            except Exception as exc:  # noqa: BLE001 - a crash is a failed scenario, reported in its row
                held, ok = f"FAILED: {type(exc).__name__}: {exc}".splitlines()[0], False
            rows.append((name, tried, held, ok, time.monotonic() - began))
            print(f"{'pass' if ok else 'FAIL'}  {name}: {held}", flush=True)
    print("\n| scenario | tried | held | result | s |\n|---|---|---|---|---|")
    for name, tried, held, ok, seconds in rows:
        print(f"| {name} | {tried} | {held.replace('|', '/')} | {'pass' if ok else 'FAIL'} | {seconds:.0f} |")
    failures = sum(not row[3] for row in rows)
    print(f"\n{len(rows) - failures} of {len(rows)} held in {time.monotonic() - start:.0f} s")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

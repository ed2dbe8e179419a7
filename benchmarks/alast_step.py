"""Training-step time and peak memory of ALaST against FT full on ViT-B/16, beside the FLOPs-predicted speedup.

ALaST (thesis Sec. 3.2) claims that freezing layers and dropping tokens saves wall clock and memory,
not only FLOPs. FLOPs predict time only where the saved products were what took the time; the Adam
step, the patch embedding, the head and the launches of shrinking kernels are not saved. This runs
real training steps (forward, cross-entropy, backward, Adam, budget update) of one timm ViT-B/16
through the project's own step: `SelectiveViT` under a `StepPlan`, `FineTuneModule.apply_plan` and
its Adam, timed and memory-metered by `thesis.alast.meter.measure_step`, FLOPs counted by
`thesis.alast.costs.StepFlops`. Plans: FT full (`StaticSchedule("all", train_stem=True)`) and
fixed ALaST budget states, K trainable blocks with every block keeping a fraction b of its tokens
(b of the tokens entering it, so fractions compound, the project's default `keep_reference:
current`; or b of the image's patches, `original`), for two choices of the frozen blocks that
bracket the FLOPs of every K-block draw (see `benchmarks/notes/alast_step.md`). The methods' steps
alternate round by round, in a rotating order, so drift of the device affects all alike. Target:
measured speedup >= 0.9 x predicted.

    python benchmarks/alast_step.py                  # CUDA if present (batch 128, bf16), else CPU (batch 4)
    python benchmarks/alast_step.py --plot-only      # figure and summary from results/bench/alast_step.csv
"""

from __future__ import annotations

import argparse
import csv
import datetime
import platform
import shlex
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

sys.path.insert(0, str(Path(__file__).resolve().parent))
from acm_kernel import write_csv  # noqa: E402

if TYPE_CHECKING:
    from thesis.alast.schedules import Schedule
    from thesis.alast.vit import StepPlan

OUT = Path("results/bench")
NAME = "alast_step"
KEEPS = (1.0, 0.8, 0.6, 0.4)
KEEP_REFERENCES = ("current", "original")
TARGET = 0.9  # measured speedup / FLOPs-predicted speedup
DEVICE_DEFAULTS = {"cuda": {"batch": 128, "steps": 30, "warmup": 5, "dtype": "bf16"},
                   "cpu": {"batch": 4, "steps": 3, "warmup": 1, "dtype": "fp32"}}


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=("cuda", "cpu"), help="default: cuda if available")
    p.add_argument("--batch", type=int, help="default: 128 on cuda, 4 on cpu")
    p.add_argument("--steps", type=int, help="timed steps per method; default: 30 on cuda, 3 on cpu")
    p.add_argument("--warmup", type=int, help="untimed steps per method first; default: 5 on cuda, 1 on cpu")
    p.add_argument("--dtype", choices=("bf16", "fp32"), help="bf16 = autocast; default: bf16 on cuda, fp32 on cpu")
    p.add_argument("--k", type=int, default=9, help="trainable blocks of the ALaST plans (thesis: 9)")
    p.add_argument("--keeps", type=float, nargs="+", default=list(KEEPS), help="token keep fractions b")
    p.add_argument("--keep-references", nargs="+", choices=KEEP_REFERENCES, default=list(KEEP_REFERENCES),
                   help="b of the tokens entering each block (current, compounding) or of the image's patches")
    p.add_argument("--depth", type=int, default=12)
    p.add_argument("--width", type=int, default=768)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--patch", type=int, default=16)
    p.add_argument("--classes", type=int, default=101, help="head size (Food-101)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--plot-only", action="store_true", help="rebuild the figure and summary from the CSV")
    args = p.parse_args(argv)
    args.command = shlex.join(["python", "benchmarks/alast_step.py", *argv])
    return args


def with_device_defaults(args: argparse.Namespace) -> argparse.Namespace:
    """Fill the flags left unset with the defaults of the device the run lands on."""
    import torch

    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    for key, value in DEVICE_DEFAULTS[args.device].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def build_vit(args: argparse.Namespace):
    """ViT-B/16 (or a smaller twin from the shape flags), random weights: timing needs no training."""
    import timm

    return timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=args.classes,
                             img_size=args.img_size, patch_size=args.patch, embed_dim=args.width,
                             depth=args.depth, num_heads=args.heads)


def frozen_block_sets(num_layers: int, k: int) -> dict[str, tuple[int, ...]]:
    """The cheapest and the costliest choice of frozen blocks for K trainable ones.

    Freezing the lowest blocks lets the step run them without autograd; freezing the highest keeps
    input gradients through every block and saves weight gradients where dropping has already
    shrunk the sequence. As token counts never grow from block to block, the FLOPs of any K-block
    draw lie between the two; with K >= depth there is one set."""
    frozen = max(0, num_layers - k)
    if frozen == 0:
        return {"none_frozen": ()}
    return {"frozen_bottom": tuple(range(frozen)), "frozen_top": tuple(range(num_layers - frozen, num_layers))}


@dataclass
class MethodRun:
    """One measured method: its plan, the schedule that observes its steps, and what it measured."""

    method: str
    layer_set: str
    frozen: tuple[int, ...]
    keep: float
    keep_reference: str
    plan: StepPlan
    schedule: Schedule
    seconds: list[float] = field(default_factory=list)
    peaks_mb: list[float] = field(default_factory=list)
    flops: int | None = None
    tokens_out: list[int] = field(default_factory=list)


def method_runs(module, k: int, keeps: list[float], references: list[str]) -> list[MethodRun]:
    """FT full as its schedule plans it, then one fixed ALaST plan per frozen set, keep fraction and
    keep reference (one run where b = 1: nothing is dropped, so the reference does not matter)."""
    from thesis.alast.schedules import StaticSchedule
    from thesis.alast.vit import StepPlan

    L = module.net.num_layers
    full = StaticSchedule("all", train_stem=True)
    full.setup(L)
    full.bind(module.net.vit, None)
    runs = [MethodRun("ft_full", "all", (), 1.0, references[0], full.plan(), full)]
    for layer_set, frozen in frozen_block_sets(L, k).items():
        plan = lambda b: StepPlan(tuple(l not in frozen for l in range(L)), (b,) * L)  # noqa: E731
        runs += [MethodRun("alast", layer_set, frozen, b, reference, plan(b), module.schedule)
                 for b in keeps for reference in (references if b < 1 else references[:1])]
    return runs


def train_step(module, optimizer, images, labels, run: MethodRun, device, bf16: bool):
    """One step as `FineTuneModule.training_step` runs it, metered; returns its `ForwardRecord` and costs."""
    import torch
    import torch.nn.functional as F

    from thesis.alast.meter import RunCosts, measure_step
    from thesis.alast.vit import ForwardRecord

    module.apply_plan(run.plan)
    module.net.keep_reference = run.keep_reference
    optimizer.zero_grad(set_to_none=True)  # the previous method's gradients stay out of this step's peak
    record, costs = ForwardRecord(), RunCosts()
    with measure_step(costs, module.net, optimizer, device):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(module.net(images, run.plan, record), labels)
        loss.backward()
        optimizer.step()
        run.schedule.observe(record)
    return record, costs


def device_name(device) -> str:
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu {platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"


def measure(args: argparse.Namespace) -> list[dict]:
    import timm
    import torch

    from thesis.alast.costs import StepFlops
    from thesis.alast.module import FineTuneModule
    from thesis.alast.schedules import ALaSTSchedule

    args = with_device_defaults(args)
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("error: --device cuda, but no CUDA device is available")
    device, bf16 = torch.device(args.device), args.dtype == "bf16"
    torch.manual_seed(args.seed)
    module = FineTuneModule(build_vit(args), ALaSTSchedule(k=args.k)).to(device)
    optimizer = module.configure_optimizers()
    counter = StepFlops(module.net)
    images = torch.randn(args.batch, 3, args.img_size, args.img_size, device=device)
    labels = torch.randint(args.classes, (args.batch,), device=device)
    runs = method_runs(module, args.k, args.keeps, args.keep_references)
    for round_ in range(args.warmup + args.steps):
        shift = round_ % len(runs)
        for run in runs[shift:] + runs[:shift]:
            record, costs = train_step(module, optimizer, images, labels, run, device, bf16)
            if run.flops is None:
                run.flops = counter.step(tuple(images.shape), record)
                run.tokens_out = record.tokens_out
            if round_ >= args.warmup:
                run.seconds.append(costs.seconds)
                run.peaks_mb.extend(costs.step_peaks_mb)
        print(f"round {round_ + 1}/{args.warmup + args.steps}" + (" (warm-up)" if round_ < args.warmup else ""),
              flush=True)
    meta = {"device": device_name(device), "torch": torch.__version__, "timm": timm.__version__,
            "date": datetime.date.today().isoformat(), "command": args.command, "batch": args.batch,
            "dtype": args.dtype, "steps": args.steps, "warmup": args.warmup,
            "model": f"vit_base_patch16_224 depth {args.depth} width {args.width} img {args.img_size}",
            "memory_kind": "cuda" if device.type == "cuda" else "saved_tensors_proxy"}
    return table_rows(runs, meta)


def table_rows(runs: list[MethodRun], meta: dict) -> list[dict]:
    """One CSV row per method, with speedups and memory taken against FT full of the same run."""
    full = runs[0]
    full_ms, full_mb = statistics.median(full.seconds) * 1e3, max(full.peaks_mb)
    out = []
    for run in runs:
        ms, peak = statistics.median(run.seconds) * 1e3, max(run.peaks_mb)
        predicted, measured = full.flops / run.flops, full_ms / ms
        ratio = round(measured / predicted, 4)
        out.append({**meta, "method": run.method, "layer_set": run.layer_set,
                    "frozen_blocks": " ".join(map(str, run.frozen)), "keep": run.keep,
                    "keep_reference": run.keep_reference, "tokens_out": " ".join(map(str, run.tokens_out)),
                    "median_ms": round(ms, 3), "min_ms": round(min(run.seconds) * 1e3, 3),
                    "max_ms": round(max(run.seconds) * 1e3, 3), "peak_mb": round(peak, 1),
                    "memory_ratio": round(peak / full_mb, 4), "flops": run.flops,
                    "predicted_speedup": round(predicted, 4), "measured_speedup": round(measured, 4),
                    "ratio": ratio, "target_met": "" if run is full else ("yes" if ratio >= TARGET else "no")})
    return out


def read_csv(path: Path) -> list[dict]:
    if not path.exists():
        sys.exit(f"error: {path} does not exist; run `make bench-alast` first")
    with path.open() as f:
        return list(csv.DictReader(f))


def series(rows: list[dict]) -> dict[tuple[str, str], list[dict]]:
    """ALaST rows by (frozen set, keep reference), sorted by b; the b = 1 row belongs to every reference."""
    alast = [r for r in rows if r["method"] == "alast"]
    references = sorted({r["keep_reference"] for r in alast if float(r["keep"]) < 1})
    out = {}
    for layer_set in dict.fromkeys(r["layer_set"] for r in alast):
        for reference in references or [alast[0]["keep_reference"]]:
            out[layer_set, reference] = sorted(
                (r for r in alast if r["layer_set"] == layer_set
                 and (r["keep_reference"] == reference or float(r["keep"]) == 1)),
                key=lambda r: -float(r["keep"]))
    return out


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (speed, memory) = plt.subplots(1, 2, figsize=(9.5, 4.2))
    top = max(max(float(r["predicted_speedup"]), float(r["measured_speedup"])) for r in rows) * 1.3
    speed.plot([1, top], [1, top], color="grey", lw=1, ls="--", label="measured = predicted")
    speed.plot([1, top], [TARGET, TARGET * top], color="grey", lw=1, ls=":", label=f"target ({TARGET} x predicted)")
    markers, styles = {"frozen_bottom": "o", "frozen_top": "s", "none_frozen": "^"}, {"current": "-", "original": "--"}
    for (layer_set, reference), group in series(rows).items():
        label = f"frozen {group[0]['frozen_blocks'] or 'none'}, b of {reference}"
        style = {"marker": markers[layer_set], "ls": styles[reference], "label": label}
        speed.plot([float(r["predicted_speedup"]) for r in group], [float(r["measured_speedup"]) for r in group],
                   **style)
        for r in group:
            speed.annotate(f"b={float(r['keep']):g}", (float(r["predicted_speedup"]), float(r["measured_speedup"])),
                           fontsize=6, xytext=(3, -8), textcoords="offset points")
        memory.plot([float(r["keep"]) for r in group], [float(r["memory_ratio"]) for r in group], **style)
    speed.set_xscale("log")
    speed.set_yscale("log")
    speed.set_xlim(0.9, top)
    speed.set_ylim(0.9 * TARGET, top)
    speed.set_xlabel("predicted speedup: FLOPs(FT full) / FLOPs(ALaST)")
    speed.set_ylabel("measured speedup: time(FT full) / time(ALaST)")
    speed.legend(fontsize=6)
    memory.axhline(1.0, color="black", lw=0.8, label="FT full")
    memory.set_xlabel("token keep fraction b (every block)")
    memory.set_ylabel(f"peak memory / FT full ({rows[0]['memory_kind']})")
    memory.set_ylim(0, 1.1)
    memory.invert_xaxis()
    memory.legend(fontsize=6)
    r0 = rows[0]
    fig.suptitle(f"ALaST vs FT full training step, {r0['model']}, batch {r0['batch']}, {r0['dtype']}, "
                 f"{r0['device']}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)


def summary(rows: list[dict]) -> str:
    """Markdown: setting, the per-method table, and the target against its threshold."""
    r0 = rows[0]
    alast = [r for r in rows if r["method"] == "alast"]
    met = sum(r["target_met"] == "yes" for r in alast)
    lines = [f"Device {r0['device']}, torch {r0['torch']}, timm {r0['timm']}, {r0['date']}; {r0['model']}, "
             f"batch {r0['batch']}, {r0['dtype']}, random weights (timing only); median of {r0['steps']} timed steps "
             f"per method after {r0['warmup']} warm-up steps, methods alternating step by step; memory: "
             f"{r0['memory_kind']}. Command: `{r0['command']}`.", "",
             "| method | frozen blocks | keep b | of | tokens after each block (class + patches) | median ms | "
             "peak MB | memory / FT full | GFLOPs | predicted speedup | measured speedup | measured / predicted |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['frozen_blocks'] or '-'} | {r['keep']} | {r['keep_reference']} | "
                     f"{r['tokens_out']} | {r['median_ms']} | {r['peak_mb']} | {r['memory_ratio']} | "
                     f"{int(r['flops']) / 1e9:.4g} | {r['predicted_speedup']} | {r['measured_speedup']} | {r['ratio']} |")
    lines += ["", "| target | measured | threshold | met |", "| --- | --- | --- | --- |"]
    for r in alast:
        lines.append(f"| measured / predicted speedup, frozen {r['frozen_blocks'] or 'none'}, b = {r['keep']} "
                     f"({r['keep_reference']}) | {r['ratio']} | >= {TARGET} | {r['target_met']} |")
    lines += ["", f"Target met for {met} of {len(alast)} ALaST plans."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    csv_path = args.out / f"{NAME}.csv"
    if not args.plot_only:
        write_csv(measure(args), csv_path)
    rows = read_csv(csv_path)
    plot(rows, args.out / f"{NAME}.png")
    (args.out / f"{NAME}.md").write_text(summary(rows))
    print(summary(rows))


if __name__ == "__main__":
    main()

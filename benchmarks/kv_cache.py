"""KV cache compression on an 8B-shaped Llama: scoring overhead in prefill, cache memory, decoding speed.

Chapter 4's presses only pay off if scoring costs little next to the prefill it follows and if the
cache they leave is really smaller and faster to decode from. This builds a random-init Llama with
Llama-3.1-8B's layer shapes (hidden 4096, 32 query / 8 KV heads of 128, MLP 14336, vocabulary
128256, RoPE theta 5e5 with its llama3 scaling; random weights: timing needs no training) and
measures, in one run, with methods alternating round by round so that drift affects all alike:
1. prefill time with each press at ratio 0.5 against the plain prefill (overhead = extra time /
   plain time; target <= 2 % at 16k-32k tokens on a GPU),
2. cache bytes after compression against the uncompressed cache (must equal the kept fraction),
3. greedy decoding tokens/s from caches compressed (KNorm) at ratios 0, 0.5, 0.75, 0.9.
Only the last position's logits are computed in prefill (`logits_to_keep=1`), as in generation.
The CPU default keeps the layer shapes but runs 1 layer at 1k tokens (a 32-layer prefill of 16k
tokens does not fit in the time or memory of a CPU box): per-layer ratios carry over, absolute
times do not. Where kvpress imports, its presses run beside the repository's on the same model, in the
same rounds (methods `kvpress_<press>`, prefill and KNorm decoding), with kvpress's defaults; a press
that fails on the installed transformers is left out with its error printed. kvpress pins
transformers < 5.3, so here it runs from the side environment of `scripts/kvpress_env.sh`:

    python benchmarks/kv_cache.py                 # CUDA if present (32 layers, 16k and 32k, bf16), else CPU
    PYTHONPATH=.kvpress python benchmarks/kv_cache.py   # with kvpress 0.5.5 beside (transformers 5.2)
    python benchmarks/kv_cache.py --plot-only     # figure and summary from results/bench/kv_cache.csv
"""

from __future__ import annotations

import argparse
import datetime
import shlex
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from acm_kernel import write_csv  # noqa: E402

OUT = Path("results/bench")
NAME = "kv_cache"
PRESSES = ("knorm", "random", "streaming_llm", "snapkv", "tova", "qfilters", "expected_attention")
DECODE_RATIOS = (0.0, 0.5, 0.75, 0.9)
KVPRESS_PREFIX = "kvpress_"
OVERHEAD_TARGET = 0.02
DEVICE_DEFAULTS = {"cuda": {"layers": 32, "contexts": [16384, 32768], "rounds": 5, "decode_tokens": 128,
                            "dtype": "bf16"},
                   "cpu": {"layers": 1, "contexts": [1024], "rounds": 3, "decode_tokens": 16, "dtype": "fp32"}}


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=("cuda", "cpu"), help="default: cuda if available")
    p.add_argument("--layers", type=int, help="decoder layers; default: 32 on cuda, 1 on cpu")
    p.add_argument("--contexts", type=int, nargs="+", help="prompt lengths; default: 16384 32768 on cuda, 1024 on cpu")
    p.add_argument("--rounds", type=int, help="timed rounds (one prefill per method each); default 5 cuda, 3 cpu")
    p.add_argument("--decode-tokens", type=int, help="greedy tokens timed per decoding ratio")
    p.add_argument("--dtype", choices=("bf16", "fp32"))
    p.add_argument("--hidden", type=int, default=4096)
    p.add_argument("--intermediate", type=int, default=14336)
    p.add_argument("--heads", type=int, default=32)
    p.add_argument("--kv-heads", type=int, default=8)
    p.add_argument("--vocab", type=int, default=128256)
    p.add_argument("--ratio", type=float, default=0.5, help="compression ratio of the prefill overhead runs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--plot-only", action="store_true")
    args = p.parse_args(argv)
    args.command = shlex.join(["python", "benchmarks/kv_cache.py", *argv])
    return args


def with_device_defaults(args: argparse.Namespace) -> argparse.Namespace:
    import torch

    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    for key, value in DEVICE_DEFAULTS[args.device].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def build_model(args: argparse.Namespace, max_context: int):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(hidden_size=args.hidden, intermediate_size=args.intermediate, num_hidden_layers=args.layers,
                         num_attention_heads=args.heads, num_key_value_heads=args.kv_heads, vocab_size=args.vocab,
                         max_position_embeddings=max(131072, max_context + args.decode_tokens),
                         rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                                          "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                          "original_max_position_embeddings": 8192})
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    torch.manual_seed(args.seed)
    with torch.device(args.device):
        model = LlamaForCausalLM(config).to(dtype).eval()
    model.set_attn_implementation("sdpa")
    return model


def make_press(name: str, ratio: float, model):
    import torch

    from thesis.kvcache.baselines import RandomPress, SnapKVPress, StreamingLLMPress, TOVAPress
    from thesis.kvcache.expected_attention import ExpectedAttentionPress
    from thesis.kvcache.knorm import KNormPress
    from thesis.kvcache.qfilters import QFiltersPress

    config = model.config
    head_dim = config.hidden_size // config.num_attention_heads
    if name == "qfilters":  # random unit filters: the cost of a projection does not depend on the filter
        filters = torch.randn(config.num_hidden_layers, config.num_key_value_heads, head_dim,
                              generator=torch.Generator().manual_seed(0))
        return QFiltersPress(ratio, filters=filters / filters.norm(dim=-1, keepdim=True))
    return {"knorm": lambda: KNormPress(ratio, skip_layers=()), "random": lambda: RandomPress(ratio, seed=0),
            "streaming_llm": lambda: StreamingLLMPress(ratio), "snapkv": lambda: SnapKVPress(ratio),
            "tova": lambda: TOVAPress(ratio), "expected_attention": lambda: ExpectedAttentionPress(ratio)}[name]()


def kvpress_press(name: str, ratio: float, model):
    """kvpress's press `name` at `ratio` with its defaults; Q-Filters get the same random unit filters as
    `make_press` (kvpress stores them negated and would otherwise download them)."""
    import kvpress

    if name == "qfilters":
        filters = -make_press("qfilters", ratio, model).filters.to(model.device, model.dtype)

        class InjectedQFilterPress(kvpress.QFilterPress):
            def post_init_from_model(self, model) -> None:
                self.q_filters = filters

        return InjectedQFilterPress(ratio)
    return {"knorm": kvpress.KnormPress, "random": lambda r: kvpress.RandomPress(r, seed=0),
            "streaming_llm": kvpress.StreamingLLMPress, "snapkv": kvpress.SnapKVPress, "tova": kvpress.TOVAPress,
            "expected_attention": kvpress.ExpectedAttentionPress}[name](ratio)


def press_of(method: str, ratio: float, model):
    """The press a method name stands for: `none`, a repository press, or `kvpress_<press>`."""
    if method == "none":
        return None
    if method.startswith(KVPRESS_PREFIX):
        return kvpress_press(method.removeprefix(KVPRESS_PREFIX), ratio, model)
    return make_press(method, ratio, model)


def synchronise(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def prefill(model, ids, press=None):
    """(seconds, cache) of one prefill, compressed by `press` if given."""
    from contextlib import nullcontext

    import torch
    from transformers import DynamicCache

    from thesis.core.models import with_cache

    cache = DynamicCache(config=model.config)
    synchronise(ids.device)
    start = time.perf_counter()
    with torch.no_grad(), (press(model) if press is not None else nullcontext()):
        logits = model(input_ids=ids, **with_cache(model, cache), logits_to_keep=1).logits
    synchronise(ids.device)
    return time.perf_counter() - start, cache, logits


def decode_rate(model, ids, press, tokens: int) -> tuple[float, int]:
    """Greedy tokens per second after a prefill compressed by `press` (None: no compression), and
    the cache's bytes right after the prefill."""
    from contextlib import nullcontext

    import torch

    from thesis.core.models import with_cache
    from thesis.kvcache.tasks.cache_stats import cache_stats

    _, cache, logits = prefill(model, ids, press)
    stored = cache_stats(model, cache, ids.shape[0], ids.shape[1]).cache_bytes
    next_id = logits[:, -1:].argmax(-1)
    synchronise(ids.device)
    start = time.perf_counter()
    with torch.no_grad(), (press(model) if press is not None else nullcontext()):
        for step in range(tokens):
            position = torch.full((1, 1), ids.shape[1] + step, device=ids.device)
            logits = model(input_ids=next_id, **with_cache(model, cache), position_ids=position).logits
            next_id = logits[:, -1:].argmax(-1)
    synchronise(ids.device)
    return tokens / (time.perf_counter() - start), stored


def kvpress_version() -> str | None:
    """kvpress's installed version, None where it does not import (missing, or its transformers pin)."""
    from importlib import metadata

    try:
        import kvpress  # noqa: F401
    except Exception:  # noqa: BLE001 - any import failure (missing, transformers pin) means: not measured
        return None
    try:
        return metadata.version("kvpress")
    except metadata.PackageNotFoundError:
        return "unknown"


def runnable_kvpress(model, args: argparse.Namespace) -> list[str]:
    """The kvpress methods that run on this model and transformers (one prefill each at the shortest
    context); kvpress releases track transformers closely, so one that fails here is reported and left out."""
    import torch

    ids = torch.randint(args.vocab, (1, min(args.contexts)), generator=torch.Generator().manual_seed(args.seed))
    ids = ids.to(model.device)
    methods = []
    for name in PRESSES:
        try:
            prefill(model, ids, kvpress_press(name, args.ratio, model))
        except Exception as error:  # noqa: BLE001 - any failure leaves this kvpress method out, with the reason
            print(f"kvpress {name} left out: {type(error).__name__}: {error}", flush=True)
            continue
        methods.append(KVPRESS_PREFIX + name)
    return methods


def measure(args: argparse.Namespace) -> list[dict]:
    import torch
    import transformers

    args = with_device_defaults(args)
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("error: --device cuda, but no CUDA device is available")
    device = torch.device(args.device)
    model = build_model(args, max(args.contexts))
    meta = {"device": (torch.cuda.get_device_name(device) if device.type == "cuda"
                       else f"cpu ({torch.get_num_threads()} threads)"),
            "torch": torch.__version__, "transformers": transformers.__version__,
            "kvpress": kvpress_version() or "not installed", "date": datetime.date.today().isoformat(),
            "command": args.command, "dtype": args.dtype, "layers": args.layers,
            "model": f"Llama-3.1-8B layer shapes, random weights, {args.layers} layer(s)"}
    theirs = runnable_kvpress(model, args) if kvpress_version() else []
    rows = []
    for context in args.contexts:
        ids = torch.randint(args.vocab, (1, context), generator=torch.Generator().manual_seed(args.seed)).to(device)
        methods = ["none", *PRESSES, *theirs]
        seconds: dict[str, list[float]] = {m: [] for m in methods}
        prefill(model, ids)  # warm-up
        for round_ in range(args.rounds):
            shift = round_ % len(methods)
            for method in methods[shift:] + methods[:shift]:
                seconds[method].append(prefill(model, ids, press_of(method, args.ratio, model))[0])
            print(f"context {context}: round {round_ + 1}/{args.rounds}", flush=True)
        plain = statistics.median(seconds["none"])
        for method in methods:
            ms = statistics.median(seconds[method])
            overhead = ms / plain - 1
            rows.append({**meta, "context": context, "measure": "prefill", "method": method, "ratio": args.ratio,
                         "median_ms": round(ms * 1e3, 3), "overhead": round(overhead, 5),
                         "target_met": "" if method == "none" else ("yes" if overhead <= OVERHEAD_TARGET else "no"),
                         "cache_bytes": "", "kept_fraction": "", "tokens_per_s": "",
                         "series": "kvpress" if method.startswith(KVPRESS_PREFIX) else "repository"})
        series = [("repository", "knorm")] + ([("kvpress", KVPRESS_PREFIX + "knorm")] if theirs else [])
        for implementation, knorm in series:  # each series measures its own uncompressed point
            full_bytes = None
            for ratio in DECODE_RATIOS:
                method = knorm if ratio > 0 else "none"
                rate, stored = decode_rate(model, ids, press_of(method, ratio, model), args.decode_tokens)
                full_bytes = full_bytes or stored
                rows.append({**meta, "context": context, "measure": "decode", "method": method,
                             "ratio": ratio, "median_ms": "", "overhead": "", "target_met": "",
                             "cache_bytes": stored, "kept_fraction": round(stored / full_bytes, 6),
                             "tokens_per_s": round(rate, 3), "series": implementation})
                print(f"context {context}: {implementation} decoding at ratio {ratio}: {rate:.2f} tokens/s", flush=True)
    return rows


def read_csv(path: Path) -> list[dict]:
    import csv

    if not path.exists():
        sys.exit(f"error: {path} does not exist; run `make bench-kv` first")
    with path.open() as f:
        return list(csv.DictReader(f))


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (overhead, decode) = plt.subplots(1, 2, figsize=(10, 4))
    contexts = sorted({int(r["context"]) for r in rows})
    width = 0.8 / len(contexts)
    for i, context in enumerate(contexts):
        part = [r for r in rows if r["measure"] == "prefill" and r["method"] != "none" and int(r["context"]) == context]
        x = [j + (i - (len(contexts) - 1) / 2) * width for j in range(len(part))]
        overhead.bar(x, [100 * float(r["overhead"]) for r in part], width, label=f"{context} tokens")
        overhead.set_xticks(range(len(part)), [r["method"] for r in part], rotation=45, ha="right", fontsize=7)
        for implementation in ("repository", "kvpress"):
            dec = [r for r in rows if r["measure"] == "decode" and int(r["context"]) == context
                   and r.get("series", "repository") == implementation]
            if dec:
                decode.plot([float(r["ratio"]) for r in dec], [float(r["tokens_per_s"]) for r in dec],
                            marker="o" if implementation == "repository" else "s",
                            ls="-" if implementation == "repository" else "--", label=f"{context} tokens, {implementation}")
    overhead.axhline(100 * OVERHEAD_TARGET, color="grey", ls="--", lw=1, label="target 2 %")
    overhead.set_ylabel("prefill time with press / without - 1 (%)")
    overhead.legend(fontsize=7)
    decode.set_xlabel("compression ratio (KNorm)")
    decode.set_ylabel("greedy decoding tokens/s")
    decode.legend(fontsize=7)
    r0 = rows[0]
    fig.suptitle(f"KV presses, {r0['model']}, {r0['dtype']}, {r0['device']}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)


def summary(rows: list[dict]) -> str:
    r0 = rows[0]
    lines = [f"- device: {r0['device']}; torch {r0['torch']}, transformers {r0['transformers']}, kvpress "
             f"{r0['kvpress']}; {r0['date']}", f"- command: `{r0['command']}`", f"- model: {r0['model']}, {r0['dtype']}",
             "", "| context | measure | series | method | ratio | median ms | overhead | target met | kept fraction | "
             "tokens/s |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['context']} | {r['measure']} | {r.get('series', 'repository')} | {r['method']} | "
                     f"{r['ratio']} | {r['median_ms']} | "
                     f"{r['overhead']} | {r['target_met']} | {r['kept_fraction']} | {r['tokens_per_s']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    csv_path = args.out / f"{NAME}.csv"
    rows = read_csv(csv_path) if args.plot_only else measure(args)
    if not args.plot_only:
        write_csv(rows, csv_path)
    plot(rows, args.out / f"{NAME}.png")
    (args.out / f"{NAME}.md").write_text(summary(rows))
    print(summary(rows))


if __name__ == "__main__":
    main()

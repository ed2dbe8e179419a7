"""Runner `thesis.sinks.analysis.analyse_sinks`: the sink analysis of one diffusion LM (thesis 5.4.3,
Figs. 5.50 and 5.52-5.59), decoding GSM8K prompts one at a time under the model's own decoder.

Pass 1 (every prompt): `SinkCapture` keeps the top-`method.keep` key scores per (step, layer, head)
with their Eq. 5.16 flags, and `ScoreSummary` folds every call's full scores into per-step
histograms and the eps sweep. Pass 2 (first prompt, if `method.replay`): the same greedy decoding is replayed under
`MoveMapCapture`, which keeps the maps of the chosen heads at the steps before and after their first
`method.max_events` main-sink events (plus `method.extra_map_steps`) and their column scores at every
step. Nothing masks attention here (Table 5.8 is `evaluate.py`).

Tables: `sinks` (every kept key that passes Eq. 5.16), `trajectories` (the main sink, rank 0, of every
prompt, step, layer and head), `events` (moves, appearances, vanishings), `score_histogram`,
`eps_sweep`, `generations`; the maps go to `move_maps.pt`; figures `sinks_<label>_*`.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from statistics import fmean

import torch
from omegaconf import DictConfig

from thesis.core.errors import ConfigError
from thesis.core.hardware import device_of
from thesis.core.models import load_hf_causal_lm, load_hf_tokenizer
from thesis.core.rundir import RunDir
from thesis.sinks import analysis_figures as figures
from thesis.sinks.capture import LayerStats, SinkCapture
from thesis.sinks.decoding import diffusion_generate
from thesis.sinks.evaluate import load_problems, mask_token_id
from thesis.sinks.models import hf_logits_fn
from thesis.sinks.move_maps import MoveMapCapture, sink_events
from thesis.sinks.runner import sink_rows, summary
from thesis.sinks.score_summary import ScoreSummary


def decode(model, model_cfg: DictConfig, prompt: torch.Tensor, mask_id: int, gen_length: int, steps: int,
           capture, seen: dict[int, torch.Tensor]) -> torch.Tensor:
    """Full ids (1, P + gen_length) under the model's diffusion decoder; `seen[step]` = ids at that step
    (on the CPU, like everything the tables are built from)."""
    decoder = model_cfg.decoder
    if decoder.kind != "diffusion":
        raise ConfigError(f"the sink analysis decodes diffusion LMs; model.decoder.kind={decoder.kind!r}: "
                          "use a diffusion model config (the autoregressive reference is only in Table 5.8)")

    def on_step(step: int, ids: torch.Tensor) -> None:
        capture.begin_step(step)
        seen[step] = ids.cpu()

    logits_of = hf_logits_fn(model, bidirectional=True, native_bidirectional=model_cfg.native_bidirectional)
    with capture:
        return diffusion_generate(logits_of, prompt, mask_id, gen_length, decoder.block_length or gen_length, steps,
                                  decoder.shift, on_step)


def on_cpu(records: list[LayerStats]) -> list[LayerStats]:
    """The records moved off the accelerator at once, so that building the tables reads no device memory
    element by element."""
    fields = ("positions", "scores", "sink", "n_sinks", "masked")
    return [replace(r, **{name: getattr(r, name).cpu() for name in fields}) for r in records]


def main_sink_paths(records: list[LayerStats]) -> dict[tuple[int, int], list[int | None]]:
    """(layer, head) -> main-sink position per step (None: no key passes Eq. 5.16), batch row 0."""
    paths: dict[tuple[int, int], list[int | None]] = {}
    for record in sorted(records, key=lambda r: (r.step, r.layer)):
        for head in range(record.positions.shape[1]):
            flagged = bool(record.sink[0, head, 0])
            paths.setdefault((record.layer, head), []).append(int(record.positions[0, head, 0]) if flagged else None)
    return paths


def chosen_heads(method: DictConfig, events: dict[tuple[int, int], list[dict]]) -> list[tuple[int, int]]:
    """`method.map_heads`, or the head with the most events (the first such head on ties)."""
    if method.map_heads:
        heads = [tuple(pair) for pair in method.map_heads]
        unknown = [head for head in heads if head not in events]
        if unknown:
            raise ConfigError(f"method.map_heads {unknown} name no (layer, head) of the model: layers and heads "
                              f"count from 0 up to {max(events)}")
        return heads
    return [max(events, key=lambda head: len(events[head]))]


def finite_mean(values: list[float]) -> float:
    """Mean over prompts of a per-prompt rate, skipping prompts where it is undefined (NaN)."""
    finite = [v for v in values if not math.isnan(v)]
    return fmean(finite) if finite else float("nan")


def figure_label(cfg: DictConfig) -> str:
    return cfg.method.label or Path(str(cfg.model.path)).name


def analyse_sinks(cfg: DictConfig, run: RunDir) -> dict[str, float]:
    device, method, data = device_of(cfg.hardware), cfg.method, cfg.data
    model = load_hf_causal_lm(cfg.model.path, dtype=cfg.model.dtype, auto_class=cfg.model.auto_class,
                              trust_remote_code=cfg.model.trust_remote_code).to(device).eval()
    if hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation("sdpa")  # the attention the captures intercept
    tokenizer = load_hf_tokenizer(cfg.model.tokenizer or cfg.model.path, trust_remote_code=cfg.model.trust_remote_code)
    mask_id = mask_token_id(tokenizer, cfg.model)
    prompts, _, _ = load_problems(data)
    steps, gen_length, label = method.steps or data.gen_length, data.gen_length, figure_label(cfg)
    edges = torch.linspace(0.0, method.hist_max, method.hist_bins + 1)
    scores = ScoreSummary(edges, sorted(set(method.eps_grid) | {method.eps}))
    sinks, trajectories, events, generations, summaries, replay = [], [], [], [], [], {}
    for index, text in enumerate(prompts):
        prompt = tokenizer(text, return_tensors="pt").input_ids.to(device)
        if method.max_prompt_tokens:  # the last tokens, so that S = max_prompt_tokens + gen_length (Fig. 5.59)
            prompt = prompt[:, -method.max_prompt_tokens:]
        capture = SinkCapture(keep=method.keep, topk=0, eps=method.eps, score=method.score, on_scores=scores.observe)
        seen: dict[int, torch.Tensor] = {}
        ids = decode(model, cfg.model, prompt, mask_id, gen_length, steps, capture, seen)
        records = on_cpu(capture.records)
        generations.append({"prompt": index, "prompt_tokens": prompt.shape[1],
                            "response": tokenizer.decode(ids[0, prompt.shape[1]:], skip_special_tokens=True)})
        for row in sink_rows(records, seen, mask_id):
            row["prompt"] = index
            if row["is_sink"]:
                sinks.append(row)
            if row["rank"] == 0:
                trajectories.append(row)
        paths = main_sink_paths(records)
        head_events = {head: sink_events(path, method.event_kinds) for head, path in paths.items()}
        events += [{"prompt": index, "layer": layer, "head": head, **event}
                   for (layer, head), found in head_events.items() for event in found]
        summaries.append(summary(records))
        if index == 0 and method.replay:
            replay = replay_first_prompt(model, cfg, method, prompt, mask_id, gen_length, steps, ids,
                                         chosen_heads(method, head_events), head_events, paths, label, run)
    sweep = scores.sweep_rows()
    run.write_table("sinks", sinks)
    run.write_table("trajectories", trajectories)
    run.write_table("events", events)
    run.write_table("score_histogram", scores.histogram_rows())
    run.write_table("eps_sweep", sweep)
    run.write_table("generations", generations)
    figures.score_distribution(label, scores.histogram_rows(), run.path)
    figures.main_sink_heatmap(label, trajectories, run.path)
    figures.eps_sweep(label, sweep, method.eps, run.path)
    return {**{key: finite_mean([s[key] for s in summaries]) for key in summaries[0]},
            **{f"n_{kind}": sum(e["kind"] == kind for e in events) for kind in method.event_kinds},
            "non_sink_share_at_eps": next(r["non_sink_share"] for r in sweep if r["eps"] == method.eps), **replay}


def replay_first_prompt(model, cfg: DictConfig, method: DictConfig, prompt: torch.Tensor, mask_id: int,
                        gen_length: int, steps: int, first_ids: torch.Tensor, heads: list[tuple[int, int]],
                        head_events: dict[tuple[int, int], list[dict]], paths: dict, label: str,
                        run: RunDir) -> dict[str, float]:
    """Pass 2: maps around the chosen heads' events, their per-step scores, and the head figures."""
    windows = [(head, event) for head in heads for event in head_events.get(head, [])[: method.max_events]]
    windows += [(head, {"step": step, "kind": "step", "from": paths[head][step], "to": paths[head][step + 1]})
                for head in heads for step in method.extra_map_steps if step + 1 < len(paths[head])]
    capture = MoveMapCapture(heads=heads, map_steps={e["step"] + d for _, e in windows for d in (0, 1)},
                             score=method.score)
    seen: dict[int, torch.Tensor] = {}
    ids = decode(model, cfg.model, prompt, mask_id, gen_length, steps, capture, seen)
    torch.save({"heads": heads, "windows": windows, "maps": capture.maps}, run.path / "move_maps.pt")
    for number, (head, event) in enumerate(windows):
        pair = [capture.maps[(event["step"] + d, *head)] for d in (0, 1)]
        masked = [seen[event["step"] + d][0] == mask_id for d in (0, 1)]
        figures.move_maps(label, event, *head, pair, masked, number, run.path)
    layer, head = heads[0]
    figures.incoming_attention(label, layer, head, {s: v for (s, l, h), v in capture.scores.items()
                                                    if (l, h) == (layer, head)}, run.path)
    figures.main_sink_position(label, layer, head, paths[(layer, head)], run.path)
    return {"replay_identical": float(torch.equal(ids.cpu(), first_ids.cpu())), "map_layer": layer, "map_head": head,
            "n_maps": len(capture.maps)}

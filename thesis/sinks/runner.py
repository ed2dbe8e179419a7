"""Runner `thesis.sinks.runner.capture_sinks`: decode, detect sinks at every step, mask the top-K.

One transformers model (`model.path`) is decoded under each decoder of `method.decoders` (`llada`:
bidirectional block diffusion; `dream`: bidirectional with the shift, any position; `arm`: causal
greedy) and each `method.mask_topk` (0 = unmasked), on seeded random prompts (`data`). At every step
`SinkCapture` keeps the top-`method.keep` key scores per layer and head with their Eq. 5.16 flags.

Writes `tables/sinks.csv` (decoder, topk, prompt, step, layer, head, rank, position, score, is_sink,
n_sinks, masked, token_id, token_is_mask) and `tables/generations.csv`; returns per decoder x topk the
share of (prompt, step, layer, head) with a sink, the mean sink count, the main-sink move rate, and
the share of generated tokens equal to the unmasked (topk 0) run's.
"""

from __future__ import annotations

import math
from statistics import fmean

import torch
from omegaconf import DictConfig

from thesis.core.errors import ConfigError
from thesis.core.hardware import device_of
from thesis.core.models import load_hf_causal_lm, load_hf_tokenizer
from thesis.core.rundir import RunDir
from thesis.sinks.capture import LayerStats, SinkCapture
from thesis.sinks.decoding import autoregressive_generate, diffusion_generate
from thesis.sinks.detection import main_sink_moves
from thesis.sinks.models import hf_logits_fn

DECODER_KINDS = ("diffusion", "autoregressive")


def random_prompts(data: DictConfig, vocab_size: int, excluded: set[int], device: torch.device) -> torch.Tensor:
    """(n_prompts, prompt_length) seeded token ids, special tokens excluded."""
    allowed = torch.tensor([i for i in range(vocab_size) if i not in excluded])
    generator = torch.Generator().manual_seed(data.seed)
    picks = torch.randint(len(allowed), (data.n_prompts, data.prompt_length), generator=generator)
    return allowed[picks].to(device)


def decode(model, decoder: DictConfig, prompts: torch.Tensor, mask_id: int, method: DictConfig,
           capture: SinkCapture, seen: dict[int, torch.Tensor]) -> torch.Tensor:
    def on_step(step: int, ids: torch.Tensor) -> None:
        capture.begin_step(step)
        seen[step] = ids.clone()

    if decoder.kind not in DECODER_KINDS:
        raise ConfigError(f"decoder kind {decoder.kind!r} is unknown: use one of {', '.join(DECODER_KINDS)}")
    with capture:
        if decoder.kind == "autoregressive":
            return autoregressive_generate(hf_logits_fn(model, bidirectional=False), prompts, method.gen_length, on_step)
        return diffusion_generate(hf_logits_fn(model, bidirectional=True), prompts, mask_id, method.gen_length,
                                  decoder.block_length, method.steps, decoder.shift, on_step)


def sink_rows(records: list[LayerStats], seen: dict[int, torch.Tensor], mask_id: int) -> list[dict]:
    rows = []
    for record in records:
        tokens = seen[record.step].gather(1, record.positions.flatten(1)).view_as(record.positions)
        batch, heads, k = record.positions.shape
        for b in range(batch):
            for h in range(heads):
                masked = set(record.masked[b, h].tolist())
                for rank in range(k):
                    position = int(record.positions[b, h, rank])
                    rows.append({"prompt": b, "step": record.step, "layer": record.layer, "head": h, "rank": rank,
                                 "position": position, "score": float(record.scores[b, h, rank]),
                                 "is_sink": bool(record.sink[b, h, rank]), "n_sinks": int(record.n_sinks[b, h]),
                                 "masked": position in masked, "token_id": int(tokens[b, h, rank]),
                                 "token_is_mask": int(tokens[b, h, rank]) == mask_id})
    return rows


def summary(records: list[LayerStats]) -> dict[str, float]:
    """Sink prevalence, mean sink count and main-sink move rate over (prompt, layer, head)."""
    n_sinks = torch.stack([r.n_sinks for r in records]).float()
    trajectories: dict[tuple[int, int, int], list] = {}
    for record in records:
        batch, heads = record.n_sinks.shape
        for b in range(batch):
            for h in range(heads):
                main = int(record.positions[b, h, 0]) if record.sink[b, h, 0] else None
                trajectories.setdefault((record.layer, b, h), []).append(main)
    rates = [main_sink_moves(path)["move_rate"] for path in trajectories.values()]
    rates = [rate for rate in rates if not math.isnan(rate)]
    return {"sink_prevalence": float((n_sinks > 0).float().mean()), "mean_sinks": float(n_sinks.mean()),
            "main_sink_move_rate": fmean(rates) if rates else float("nan")}


def capture_sinks(cfg: DictConfig, run: RunDir) -> dict[str, float]:
    device = device_of(cfg.hardware)
    model = load_hf_causal_lm(cfg.model.path, dtype=cfg.model.dtype).to(device).eval()
    model.set_attn_implementation("sdpa")
    tokenizer = load_hf_tokenizer(cfg.model.tokenizer or cfg.model.path)
    mask_id = tokenizer.convert_tokens_to_ids(cfg.model.mask_token)
    if mask_id is None or mask_id == tokenizer.unk_token_id:
        raise ConfigError(f"model.mask_token={cfg.model.mask_token!r} is not in the tokenizer: name its mask token")
    prompts = random_prompts(cfg.data, len(tokenizer), set(tokenizer.all_special_ids), device)
    method, rows, generations, metrics = cfg.method, [], [], {}
    if not method.mask_topk or method.mask_topk[0] != 0:
        raise ConfigError(f"method.mask_topk={list(method.mask_topk)} must start with 0, the unmasked reference")
    for name, decoder in method.decoders.items():
        unmasked = None
        for topk in method.mask_topk:
            capture = SinkCapture(keep=method.keep, topk=topk, eps=method.eps, score=method.score,
                                  require_eps=method.require_eps)
            seen: dict[int, torch.Tensor] = {}
            ids = decode(model, decoder, prompts, mask_id, method, capture, seen)
            response = ids[:, prompts.shape[1]:]
            unmasked = response if unmasked is None else unmasked
            rows += [{"decoder": name, "topk": topk, **row} for row in sink_rows(capture.records, seen, mask_id)]
            generations += [{"decoder": name, "topk": topk, "prompt": b, "response_ids": " ".join(map(str, r.tolist()))}
                            for b, r in enumerate(response)]
            metrics[f"{name}/top{topk}"] = {**summary(capture.records),
                                            "agreement_with_unmasked": float((response == unmasked).float().mean())}
    run.write_table("sinks", rows)
    run.write_table("generations", generations)
    return metrics

"""Runner `thesis.sinks.evaluate.evaluate_sink_masking`: Table 5.8, task accuracy with the top-K
sinks masked.

The model of `cfg.model` answers every problem of `cfg.data` (GSM8K: exact match of the final number;
HumanEval: pass@1 of one greedy completion) once unmasked and once per K of `method.mask_topk`,
with the attention to the K keys of highest Eq. 5.16 score removed at every denoising step, layer
and head (`SinkCapture`). Decoding follows `cfg.model.decoder` (LLaDA: blocks, the token itself;
Dream: shifted, anywhere; an autoregressive model: greedy). Problems run one at a time, so prompts
of any length need no padding. Writes `tables/answers.csv` (one row per problem and K) and
`tables/accuracy.csv`; returns `top<K>/accuracy` and `top<K>/stderr` (binomial, as the thesis's ±).
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
from omegaconf import DictConfig
from tqdm import tqdm

from thesis.core.errors import ConfigError
from thesis.core.hardware import device_of
from thesis.core.models import load_hf_causal_lm, load_hf_tokenizer
from thesis.core.rundir import RunDir
from thesis.sinks.capture import SinkCapture
from thesis.sinks.decoding import autoregressive_generate, diffusion_generate
from thesis.sinks.models import hf_logits_fn
from thesis.sinks.tasks import gsm8k, humaneval
from thesis.sinks.tasks.stats import binomial_stderr

TASKS = ("gsm8k", "humaneval")


def load_problems(data: DictConfig) -> tuple[list[str], list, callable]:
    """(prompts, problems, score(problem, text) -> (correct, extracted)) of the configured task."""
    if data.task == "gsm8k":
        problems = gsm8k.read_gsm8k(data.test)[: data.limit]
        shots = gsm8k.read_gsm8k(data.train)[: data.num_fewshot] if data.num_fewshot else []
        prompts = [gsm8k.fewshot_prompt(p, shots) for p in problems]

        def score(problem, text):
            extracted = gsm8k.extract(gsm8k.truncate(text), data.extraction)
            return extracted == problem.target, extracted
    elif data.task == "humaneval":
        problems = humaneval.read_humaneval(data.test)[: data.limit]
        prompts = [p.prompt for p in problems]

        def score(problem, text):
            return humaneval.passes(problem, text, data.timeout), humaneval.truncate(text)
    else:
        raise ConfigError(f"data.task={data.task!r} is unknown: use one of {', '.join(TASKS)}")
    return prompts, problems, score


def generate(model, model_cfg: DictConfig, prompt: torch.Tensor, mask_id: int | None, gen_length: int,
             steps: int, capture: SinkCapture | None) -> torch.Tensor:
    """Response ids of one prompt (1, P) under the model's decoder, sinks masked by `capture`."""
    decoder = model_cfg.decoder

    def on_step(step: int, ids: torch.Tensor) -> None:
        if capture is not None:
            capture.begin_step(step)

    with capture if capture is not None else nullcontext():
        if decoder.kind == "autoregressive":
            ids = autoregressive_generate(hf_logits_fn(model, bidirectional=False), prompt, gen_length, on_step)
        elif decoder.kind == "diffusion":
            logits_of = hf_logits_fn(model, bidirectional=True, native_bidirectional=model_cfg.native_bidirectional)
            block = decoder.block_length or gen_length
            ids = diffusion_generate(logits_of, prompt, mask_id, gen_length, block, steps, decoder.shift, on_step)
        else:
            raise ConfigError(f"model.decoder.kind={decoder.kind!r} is unknown: use diffusion or autoregressive")
    if capture is not None:
        capture.records.clear()  # statistics are not needed here; keep memory flat over the benchmark
    return ids[:, prompt.shape[1]:]


def mask_token_id(tokenizer, model_cfg: DictConfig) -> int | None:
    if model_cfg.decoder.kind != "diffusion":
        return None
    mask_id = tokenizer.convert_tokens_to_ids(model_cfg.mask_token) if model_cfg.mask_token else None
    if mask_id is None or mask_id == tokenizer.unk_token_id:
        raise ConfigError(f"model.mask_token={model_cfg.mask_token!r} is not in the tokenizer: name its mask token")
    return mask_id


def evaluate_sink_masking(cfg: DictConfig, run: RunDir) -> dict[str, float]:
    device, method, data = device_of(cfg.hardware), cfg.method, cfg.data
    model = load_hf_causal_lm(cfg.model.path, dtype=cfg.model.dtype, auto_class=cfg.model.auto_class,
                              trust_remote_code=cfg.model.trust_remote_code).to(device).eval()
    if hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation("sdpa")  # the attention SinkCapture intercepts
    tokenizer = load_hf_tokenizer(cfg.model.tokenizer or cfg.model.path, trust_remote_code=cfg.model.trust_remote_code)
    mask_id = mask_token_id(tokenizer, cfg.model)
    prompts, problems, score = load_problems(data)
    steps = method.steps or data.gen_length
    if not method.mask_topk or method.mask_topk[0] != 0:
        raise ConfigError(f"method.mask_topk={list(method.mask_topk)} must start with 0, the unmasked reference")
    answers, accuracy, metrics = [], [], {}
    for topk in method.mask_topk:
        capture = SinkCapture(keep=topk, topk=topk, eps=method.eps, score=method.score,
                              require_eps=method.require_eps) if topk else None
        correct = 0
        for index, (text, problem) in enumerate(tqdm(list(zip(prompts, problems)), desc=f"{data.task} top-{topk}",
                                                     disable=not method.progress)):
            prompt = tokenizer(text, return_tensors="pt").input_ids.to(device)
            response = generate(model, cfg.model, prompt, mask_id, data.gen_length, steps, capture)
            generation = tokenizer.decode(response[0], skip_special_tokens=True)
            ok, extracted = score(problem, generation)
            correct += int(ok)
            answers.append({"task": data.task, "topk": topk, "problem": index, "correct": bool(ok),
                            "extracted": extracted, "generation": generation})
        value = correct / len(problems)
        stderr = binomial_stderr(value, len(problems))
        accuracy.append({"task": data.task, "topk": topk, "n": len(problems), "accuracy": value, "stderr": stderr})
        metrics[f"top{topk}/accuracy"], metrics[f"top{topk}/stderr"] = value, stderr
    run.write_table("answers", answers)
    run.write_table("accuracy", accuracy)
    return metrics

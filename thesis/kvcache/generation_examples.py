"""Runner of `kv_qfilters_generation_examples` (thesis 4.2, Table 4.2): what a memory-constrained model writes
after a Wikipedia passage, under each press, side by side.

Each document (one .txt file of `data.prompts_dir`, read as sentences by `tasks/haystack.py`) gives one
prompt: its first sentences up to `data.context_tokens` tokens. The prompt is split into a context and
its last `data.tail_tokens` tokens; `tasks/generation.greedy_answer` prefills the context under the
press, appends the tail, and continues greedily for `data.max_new_tokens` tokens. The presses of
`method.presses` are decoding presses holding every layer at `target_size` pairs (Table 4.2's
"memory-constrained" setting; with `compress_prefill` the context is cut to the budget right after
the prefill, then the tail and each new token are read with the cache back at the budget after every
step), so the tail and every generated token see only the kept pairs. The thesis reads the whole
passage token by token under the budget; here the context is prefilled at once, then cut (the
prediction after the tail already depends on the press's choice). null = the uncompressed model.

Writes `tables/generations.csv` (document, press, prompt_end, continuation, achieved_ratio); returns
the number of prompts and, per press, the share of continuations equal to the uncompressed one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from thesis.core.errors import DataNotFoundError
from thesis.core.evaluate import progress
from thesis.core.hardware import device_of
from thesis.core.rundir import RunDir
from thesis.kvcache.runner import build_press, load_model
from thesis.kvcache.tasks.base import Sample
from thesis.kvcache.tasks.generation import greedy_answer
from thesis.kvcache.tasks.haystack import fill, sentences_of

#: characters of the prompt shown before each continuation
PROMPT_END_CHARS = 300


def documents(prompts_dir: str | Path | None, limit: int | None) -> list[tuple[str, str | Path | None]]:
    """(name, path) of each prompt document: the sorted .txt files of the folder, or the filler when None."""
    if prompts_dir is None:
        return [("filler", None)]
    files = sorted(Path(prompts_dir).glob("*.txt"))
    if not files:
        raise DataNotFoundError(f"no .txt documents in {prompts_dir}: put one Wikipedia article per .txt file "
                                "there, or set data.prompts_dir=null for the offline filler")
    return [(f.stem, f) for f in files[:limit]]


def prompt_sample(tokenizer: Any, name: str, path: str | Path | None, context_tokens: int, tail_tokens: int,
                  max_new_tokens: int) -> Sample:
    """The document's first sentences up to context_tokens, split before its last tail_tokens tokens."""
    text = " ".join(fill(tokenizer, sentences_of(path), context_tokens))
    ids = tokenizer(text, add_special_tokens=False).input_ids
    if len(ids) <= tail_tokens:
        raise ValueError(f"document {name} has {len(ids)} tokens, not more than tail_tokens={tail_tokens}")
    return Sample(id=name, context=tokenizer.decode(ids[:-tail_tokens]), question=tokenizer.decode(ids[-tail_tokens:]),
                  answers=(), max_new_tokens=max_new_tokens)


def generation_examples(cfg: DictConfig, run: RunDir) -> dict[str, float]:
    model, tokenizer = load_model(cfg.model, device_of(cfg.hardware))
    data = cfg.data
    samples = [prompt_sample(tokenizer, name, path, data.context_tokens, data.tail_tokens, data.max_new_tokens)
               for name, path in documents(data.prompts_dir, data.limit)]
    filters: dict[str, Any] = {}
    rows, continuations = [], {}
    for name in progress(list(cfg.method.presses), desc="presses"):
        spec = cfg.method.presses[name]
        press = None if spec is None else build_press(OmegaConf.to_container(spec, resolve=True), 0.0, model, filters)
        for sample in samples:
            answer = greedy_answer(model, tokenizer, sample, press)
            continuations[name, sample.id] = answer.text
            rows.append({"document": sample.id, "press": name,
                         "prompt_end": (sample.context + sample.question)[-PROMPT_END_CHARS:],
                         "continuation": answer.text, "achieved_ratio": answer.stats.achieved_ratio})
    run.write_table("generations", rows)
    metrics: dict[str, float] = {"prompts": len(samples)}
    if "none" in cfg.method.presses:
        for name in cfg.method.presses:
            same = [continuations[name, s.id] == continuations["none", s.id] for s in samples]
            metrics[f"{name}/same_as_uncompressed"] = sum(same) / len(same)
    return metrics

"""`synth_reasoning`: the miniature's offline corpus (spec B.7), in place of GSM8K and HumanEval.

Two task families over a ~30-token vocabulary:

- A, "gsm-like" two-step arithmetic: `b=3,e=4.a=b+e.d=a*b.d?` -> `21.` (letters drawn at random, so
  the answer depends on reading the bindings, not on positions);
- B, "code-like" list operations: `sort 3 1 4 ;` -> `1,3,4.` and `rev ...` (reverse).

A sequence is `BOS, PAD..., prompt | answer, EOS...`: every prompt is left-padded to one length so
prompts batch without a padding mask, and every answer is padded with EOS to the generation length,
as LLaDA pads its responses, so punctuation and EOS are frequent candidate "semantic" sinks.
Problems are split once and for all by a checksum of their prompt: one in `holdout_mod` is held out
for evaluation and never drawn for training. `solve` recomputes the answer from the prompt tokens
alone, which is how generations are scored.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import torch

from thesis.core.errors import ConfigError

SPECIAL = ("<pad>", "<bos>", "<eos>", "<mask>")
DIGITS = tuple("0123456789")
OPERATORS = ("+", "-", "*", "=")
LETTERS = tuple("abcde")
PUNCTUATION = (".", ",", ";", "?")
WORDS = ("rev", "sort")
VOCAB = SPECIAL + DIGITS + OPERATORS + LETTERS + PUNCTUATION + WORDS
ID = {token: i for i, token in enumerate(VOCAB)}
PAD, BOS, EOS, MASK = (ID[t] for t in SPECIAL)
#: tokens whose sinks count as "semantic" (punctuation and end of sequence, thesis 5.4)
SEMANTIC = frozenset(ID[t] for t in PUNCTUATION + ("<eos>",))
TASKS = ("A", "B")
#: longest task-A prompt (22 tokens) plus BOS
MIN_PROMPT_LENGTH = 23
#: longest answer: five list items with four commas and a full stop
MAX_ANSWER_LENGTH = 10


def encode(tokens: list[str]) -> list[int]:
    return [ID[t] for t in tokens]


def decode(ids: list[int]) -> list[str]:
    return [VOCAB[i] for i in ids]


def number(value: int) -> list[str]:
    return list(str(value))


def arithmetic(a: int, op: str, b: int) -> int:
    return a + b if op == "+" else a - b if op == "-" else a * b


def task_a(rng: np.random.Generator) -> list[str]:
    """Two bindings, two derived variables, one query; every value stays in 0..99."""
    while True:
        x, y, z, w = (str(v) for v in rng.choice(LETTERS, size=4, replace=False))
        vx, vy = (int(v) for v in rng.integers(0, 10, size=2))
        op1, op2 = (str(v) for v in rng.choice(["+", "-", "*"], size=2))
        second = str(rng.choice([x, y]))
        vz = arithmetic(vx, op1, vy)
        vw = arithmetic(vz, op2, vx if second == x else vy)
        if 0 <= vz <= 99 and 0 <= vw <= 99:
            return [x, "=", str(vx), ",", y, "=", str(vy), ".", z, "=", x, op1, y, ".",
                    w, "=", z, op2, second, ".", w, "?"]


def task_b(rng: np.random.Generator) -> list[str]:
    items = [str(v) for v in rng.integers(0, 10, size=int(rng.integers(3, 6)))]
    return [str(rng.choice(WORDS)), *items, ";"]


def solve(prompt: list[str]) -> list[str]:
    """The answer tokens of a prompt (without BOS/PAD), computed from the prompt alone."""
    prompt = [t for t in prompt if t not in SPECIAL]
    if prompt and prompt[0] in WORDS:
        items = prompt[1:-1]
        items = sorted(items) if prompt[0] == "sort" else items[::-1]
        return [token for item in items for token in (item, ",")][:-1] + ["."]
    values: dict[str, int] = {}
    for statement in "".join(prompt).split(".")[:-1]:
        for binding in statement.split(","):
            name, expression = binding.split("=")
            if len(expression) == 1:
                values[name] = int(expression) if expression.isdigit() else values[expression]
            else:
                values[name] = arithmetic(values[expression[0]], expression[1], values[expression[2]])
    return number(values[prompt[-2]]) + ["."]


def is_held_out(prompt: list[str], holdout_mod: int) -> bool:
    return zlib.crc32(" ".join(prompt).encode()) % holdout_mod == 0


@dataclass(frozen=True)
class SynthReasoning:
    """Seeded sampler of padded (prompt, answer) sequences; `split` is "train" or "eval"."""

    prompt_length: int = 32
    gen_length: int = 32
    holdout_mod: int = 10

    def __post_init__(self) -> None:
        if self.prompt_length < MIN_PROMPT_LENGTH:
            raise ConfigError(f"data.prompt_length={self.prompt_length} cannot hold a task-A prompt: "
                              f"set it to at least {MIN_PROMPT_LENGTH}")
        if self.gen_length < MAX_ANSWER_LENGTH + 1:
            raise ConfigError(f"data.gen_length={self.gen_length} cannot hold the longest answer and an EOS: "
                              f"set it to at least {MAX_ANSWER_LENGTH + 1}")

    @property
    def seq_length(self) -> int:
        return self.prompt_length + self.gen_length

    def problem(self, task: str, rng: np.random.Generator, split: str) -> list[str]:
        if task not in TASKS or split not in ("train", "eval"):
            raise ConfigError(f"unknown task {task!r} or split {split!r}: tasks are {TASKS}, splits train/eval")
        make = task_a if task == "A" else task_b
        while True:
            prompt = make(rng)
            if is_held_out(prompt, self.holdout_mod) == (split == "eval"):
                return prompt

    def sequence(self, prompt: list[str]) -> list[int]:
        answer = solve(prompt)
        left = [BOS] + [PAD] * (self.prompt_length - 1 - len(prompt))
        return left + encode(prompt) + encode(answer) + [EOS] * (self.gen_length - len(answer))

    def batch(self, n: int, rng: np.random.Generator, split: str = "train",
              tasks: tuple[str, ...] = TASKS) -> tuple[torch.Tensor, list[str]]:
        """(n, seq_length) token ids and the task of each row (tasks drawn uniformly)."""
        names = [str(t) for t in rng.choice(tasks, size=n)]
        rows = [self.sequence(self.problem(task, rng, split)) for task in names]
        return torch.tensor(rows, dtype=torch.long), names

    def eval_set(self, n_per_task: int, seed: int) -> dict[str, torch.Tensor]:
        """`n_per_task` distinct held-out sequences per task, the same for a given seed."""
        rng = np.random.default_rng(seed)
        out = {}
        for task in TASKS:
            seen: dict[str, list[int]] = {}
            for _ in range(200 * n_per_task):
                prompt = self.problem(task, rng, "eval")
                seen.setdefault(" ".join(prompt), self.sequence(prompt))
                if len(seen) == n_per_task:
                    break
            out[task] = torch.tensor(list(seen.values()), dtype=torch.long)
        return out


def exact_match(prompt_ids: torch.Tensor, response_ids: torch.Tensor) -> torch.Tensor:
    """(B,) bool: the response up to its first EOS is the prompt's answer (recomputed by `solve`)."""
    hits = []
    for prompt, response in zip(prompt_ids.tolist(), response_ids.tolist()):
        tokens = decode(response)
        cut = tokens.index("<eos>") if "<eos>" in tokens else len(tokens)
        hits.append(tokens[:cut] == solve(decode(prompt)))
    return torch.tensor(hits, dtype=torch.bool)

"""HumanEval as lm-evaluation-harness scores it: the prompt is the function's signature and
docstring, the completion is cut at the first top-level statement that is not the function body,
and a problem passes when prompt + completion + the benchmark's tests + `check(entry_point)` exits
cleanly within the time limit in a separate Python process. pass@k uses the unbiased estimator."""

from __future__ import annotations

import math
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from thesis.sinks.tasks.records import read_records

HOW_TO_GET = ("HumanEval ships as data/HumanEval.jsonl.gz (github.com/openai/human-eval) or as "
              "openai_humaneval/test-00000-of-00001.parquet (huggingface.co/datasets/openai/openai_humaneval); "
              "point data.test at the file")
FIELDS = ("task_id", "prompt", "canonical_solution", "test", "entry_point")
STOP = ("\nclass", "\ndef", "\n#", "\nif", "\nprint")


@dataclass(frozen=True)
class CodingProblem:
    task_id: str
    prompt: str
    canonical_solution: str
    test: str
    entry_point: str


def read_humaneval(path: str | Path) -> list[CodingProblem]:
    return [CodingProblem(*(str(r[f]) for f in FIELDS)) for r in read_records(path, FIELDS, HOW_TO_GET)]


def truncate(completion: str, stops: tuple[str, ...] = STOP) -> str:
    cut = min((completion.find(s) for s in stops if s in completion), default=len(completion))
    return completion[:cut]


def program(problem: CodingProblem, completion: str) -> str:
    return f"{problem.prompt}{truncate(completion)}\n\n{problem.test}\n\ncheck({problem.entry_point})\n"


def passes(problem: CodingProblem, completion: str, timeout: float = 10.0) -> bool:
    """Run the program in an isolated interpreter (`-I`, a fresh temporary working directory);
    a non-zero exit, an exception or running past `timeout` seconds is a failure. The generated
    code is untrusted: run evaluations in a sandbox (container or VM) you can throw away."""
    with tempfile.TemporaryDirectory() as workdir:
        script = Path(workdir) / "candidate.py"
        script.write_text(program(problem, completion), encoding="utf-8")
        try:
            result = subprocess.run([sys.executable, "-I", str(script)], cwd=workdir, capture_output=True,
                                    timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            return False
    return result.returncode == 0


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c pass: 1 - C(n - c, k) / C(n, k)."""
    if not 0 <= c <= n or k > n:
        raise ValueError(f"need 0 <= c <= n and k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)

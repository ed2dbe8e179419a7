"""Offline fixtures of the Chapter 4 decoding runs (thesis 4.3, Table 4.4, Fig. 4.44): a tiny random-init
Qwen2 (the architecture of DeepSeek-R1-Distill-Qwen and OpenMath-Nemotron) saved with `save_pretrained`,
and MATH-500 / AIME25 files in their published layouts with a few hand-written problems."""

from __future__ import annotations

import json
from pathlib import Path

from thesis.core.fixtures import _save_random_hf_model, _save_tokenizer, fixture

MATH500_PROBLEMS = (
    ("What is $3 + 4$?", "$3 + 4 = \\boxed{7}$.", "7", "Prealgebra", 1, "test/prealgebra/1.json"),
    ("Simplify $\\frac{2}{4}$.", "$\\frac{2}{4} = \\boxed{\\frac{1}{2}}$.", "\\frac{1}{2}", "Algebra", 1,
     "test/algebra/2.json"),
    ("Solve $2x = 10$ for $x$.", "Dividing by 2, $x = \\boxed{5}$.", "5", "Algebra", 2, "test/algebra/3.json"),
)

AIME25_PROBLEMS = (
    ("Find the remainder when $2^{10}$ is divided by $1000$.", "24"),
    ("How many positive divisors does $36$ have?", "9"),
    ("Find the sum of the first $10$ positive integers.", "55"),
    ("Find $7 \\cdot 11 \\cdot 13$ modulo $1000$.", "1"),
)


def _jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


@fixture("hf_qwen2_tiny")
def hf_qwen2_tiny(out: Path) -> None:
    """A 2-layer random-init Qwen2 (hidden 64, 4 heads / 2 KV heads, q/k/v biases as in Qwen2) and the
    fixtures' byte-level tokenizer, saved so `from_pretrained(out)` loads both offline."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tokenizer = _save_tokenizer(out)
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False)
    _save_random_hf_model(out, lambda: Qwen2ForCausalLM(config))


@fixture("kv_math_tiny")
def kv_math_tiny(out: Path) -> None:
    """`math500/test.jsonl` (HuggingFaceH4/MATH-500's fields), `aime25/test.jsonl` (math-ai/aime25:
    `problem`, `answer`, `id`) and `aime25_opencompass/aime2025-{I,II}.jsonl` (opencompass/AIME2025:
    `question`, `answer`)."""
    _jsonl(out / "math500" / "test.jsonl", [
        {"problem": p, "solution": s, "answer": a, "subject": subject, "level": level, "unique_id": uid}
        for p, s, a, subject, level, uid in MATH500_PROBLEMS])
    _jsonl(out / "aime25" / "test.jsonl", [
        {"problem": p, "answer": a, "id": str(i)} for i, (p, a) in enumerate(AIME25_PROBLEMS)])
    for part, problems in (("I", AIME25_PROBLEMS[:2]), ("II", AIME25_PROBLEMS[2:])):
        _jsonl(out / "aime25_opencompass" / f"aime2025-{part}.jsonl",
               [{"question": p, "answer": a} for p, a in problems])

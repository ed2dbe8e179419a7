"""synth_reasoning: seeded and deterministic, held-out split disjoint from training, answers recomputed
from the prompt alone, exact match up to the first EOS."""

import numpy as np
import pytest
import torch

from thesis.core.errors import ConfigError
from thesis.sinks.mini.corpus import (BOS, EOS, ID, PAD, SynthReasoning, decode, encode, exact_match, is_held_out,
                                      solve)

CORPUS = SynthReasoning(prompt_length=24, gen_length=12)


def prompt_of(row: torch.Tensor) -> list[str]:
    return [t for t in decode(row[:CORPUS.prompt_length].tolist()) if t not in ("<bos>", "<pad>")]


def test_same_seed_same_batch_other_seed_other_batch():
    first, tasks = CORPUS.batch(32, np.random.default_rng(5))
    again, tasks_again = CORPUS.batch(32, np.random.default_rng(5))
    other, _ = CORPUS.batch(32, np.random.default_rng(6))
    assert torch.equal(first, again) and tasks == tasks_again
    assert not torch.equal(first, other)
    assert torch.equal(CORPUS.eval_set(10, 3)["A"], CORPUS.eval_set(10, 3)["A"])


def test_layout_bos_pads_prompt_answer_eos():
    batch, _ = CORPUS.batch(64, np.random.default_rng(0))
    assert batch.shape == (64, 36)
    assert (batch[:, 0] == BOS).all()
    for row in batch:
        response = decode(row[CORPUS.prompt_length:].tolist())
        answer = solve(prompt_of(row))
        assert response[:len(answer)] == answer and set(response[len(answer):]) == {"<eos>"}
        prompt = row[1:CORPUS.prompt_length].tolist()
        first = next(i for i, t in enumerate(prompt) if t != PAD)
        assert all(t == PAD for t in prompt[:first]) and PAD not in prompt[first:]


def test_solve_known_answers():
    assert solve(list("b=3,e=4.a=b+e.d=a*b.d?")) == list("21.")
    assert solve(list("a=9,c=2.d=a-c.e=d-c.e?")) == list("5.")
    assert solve(["sort", "3", "1", "4", ";"]) == ["1", ",", "3", ",", "4", "."]
    assert solve(["rev", "3", "1", "4", "7", ";"]) == ["7", ",", "4", ",", "1", ",", "3", "."]


def test_generated_task_a_stays_in_range_and_uses_the_bindings():
    batch, tasks = CORPUS.batch(200, np.random.default_rng(1), tasks=("A",))
    values = [int("".join(solve(prompt_of(row))[:-1])) for row in batch]
    assert set(tasks) == {"A"} and all(0 <= v <= 99 for v in values) and len(set(values)) > 10


def test_held_out_problems_never_train():
    train, _ = CORPUS.batch(300, np.random.default_rng(2), "train")
    assert not any(is_held_out(prompt_of(row), CORPUS.holdout_mod) for row in train)
    held = CORPUS.eval_set(20, 0)
    for rows in held.values():
        prompts = [" ".join(prompt_of(row)) for row in rows]
        assert len(set(prompts)) == 20 and all(is_held_out(p.split(), CORPUS.holdout_mod) for p in prompts)


def test_exact_match_reads_up_to_the_first_eos():
    row = CORPUS.eval_set(1, 0)["B"][0]
    prompt, response = row[None, :CORPUS.prompt_length], row[None, CORPUS.prompt_length:].clone()
    assert exact_match(prompt, response).tolist() == [True]
    after_eos = response.clone()
    after_eos[0, -1] = ID["7"]  # garbage after the first EOS does not count
    assert exact_match(prompt, after_eos).tolist() == [True]
    wrong = response.clone()
    wrong[0, 0] = EOS
    assert exact_match(prompt, wrong).tolist() == [False]
    assert encode(decode([3, 4])) == [3, 4]


def test_lengths_that_cannot_hold_the_tasks_are_refused():
    with pytest.raises(ConfigError, match="prompt_length"):
        SynthReasoning(prompt_length=10)
    with pytest.raises(ConfigError, match="gen_length"):
        SynthReasoning(gen_length=8)

"""The synthetic world's training statistics, its tokenizer, and decoding / likelihood helpers."""

import numpy as np
import torch

from thesis.spare.generation import answer_losses, cad_generate, generate
from thesis.spare.hooks import Capture
from thesis.spare.mini_data import prompt_set, split_facts
from thesis.spare.pipeline import behaviour_labels


def test_world_is_seeded_and_conflict_labels_follow_trust(world):
    from thesis.spare.synth import World

    assert np.array_equal(World(12, 2, 10, seed=0).truth, world.truth)
    big = World(seed=0)
    rng = np.random.default_rng(0)
    ids, labels = big.training_batch(6000, rng, (0.0, 0.0, 1.0))
    source = ids[:, 2] - big.index["s0"]
    value_in_context = torch.where(ids[:, 3] == ids[:, 12], ids[:, 5], ids[:, 9])  # statement about the asked fact
    follows = (labels == value_in_context).float()
    low, high = follows[source == 0].mean(), follows[source == 7].mean()
    assert low < 0.2 and high > 0.8


def test_tokenizer_round_trip(world, tiny_lm):
    _, tokenizer = tiny_lm
    rng = np.random.default_rng(0)
    dev, test = split_facts(world, 5, rng)
    prompts = prompt_set(world, test, rng)
    ids = tokenizer(prompts.conflict[0])["input_ids"]
    assert ids[0] == world.index["<bos>"] and len(ids) == 15
    assert tokenizer.decode(ids[1:]) == prompts.conflict[0]
    assert prompts.memory_answers[0] != prompts.context_answers[0]


def test_answer_losses_match_a_manual_computation(tiny_lm):
    model, tokenizer = tiny_lm
    prompt_text, answer = "c s1 e0 r0 v3 ; e1 r1 v2 ; q e0 r0 ?", "v3"
    loss = answer_losses(model, tokenizer, [prompt_text, "q e1 r1 ?"], [answer, "v4"])
    ids = tokenizer(prompt_text + " " + answer, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, -2]
    assert torch.isclose(loss[0], -logits.log_softmax(-1)[ids[0, -1]], atol=1e-5)


def test_generate_captures_the_prompt_pass_and_cad_with_zero_alpha_is_greedy(tiny_lm):
    model, tokenizer = tiny_lm
    prompts = ["c s1 e0 r0 v3 ; e1 r1 v2 ; q e0 r0 ?", "q e1 r1 ?"]
    capture = Capture(model, [0, 2])
    answers = generate(model, tokenizer, prompts, max_new_tokens=3, capture=capture)
    assert capture.result()[("hidden", 2)].shape == (2, 32)
    assert answers == cad_generate(model, tokenizer, prompts, prompts, alpha=0.0, max_new_tokens=3)
    alone = [generate(model, tokenizer, [p], max_new_tokens=3)[0] for p in prompts]
    assert alone == answers  # left padding changes nothing


def test_behaviour_labels():
    assert behaviour_labels(["Oslo", "lima", "x"], [["oslo"], ["oslo"], ["oslo"]],
                            [["lima"], ["lima"], ["lima"]]).tolist() == [1, 0, -1]

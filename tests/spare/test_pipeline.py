"""SpARE end to end on a tiny random model (spec C.2 structural checks): collect, train an SAE,
select latents, steer; the edit changes the last-position logits and nothing before it."""

import numpy as np
import torch

from thesis.spare.hooks import edit
from thesis.spare.mini_data import prompt_set
from thesis.spare.pipeline import collect, layer_vectors
from thesis.spare.sae_train import train_sae
from thesis.spare.steering import SpareEdit


def test_spare_pipeline_on_a_random_model(world, tiny_lm):
    model, tokenizer = tiny_lm
    rng = np.random.default_rng(0)
    prompts = prompt_set(world, world.facts, rng, all_sources=True)
    collected = collect(model, tokenizer, prompts.conflict, prompts.context_answers, prompts.memory_answers, [1],
                        "loglik", "code", 1, 64)
    assert (collected.label == 1).any() and (collected.label == 0).any()
    sae, losses = train_sae(collected.acts[1], n=128, k=8, steps=60, batch_size=128, lr=3e-3, seed=0)
    assert np.isfinite(losses).all() and np.mean(losses[-10:]) < losses[0]
    v = layer_vectors(collected, sae, 1, K=0.3, weighting="code", code="pre_topk_relu", seed=0)
    assert 1 <= v.k < sae.n
    assert not set(v.context_latents) & set(v.memory_latents)
    ids = tokenizer(prompts.conflict[:4], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        reference = model(input_ids=ids).logits
        with edit(model, {1: SpareEdit(sae, v.z_context, v.z_memory, "context", 3.0)}):
            steered = model(input_ids=ids).logits
    assert torch.equal(steered[:, :-1], reference[:, :-1])
    assert (steered[:, -1] - reference[:, -1]).abs().max() > 0


def test_trajectory_effects_average_the_layers_after_the_edit():
    from thesis.spare.trajectory import trajectory_effects

    rows = [{"steering": s, "layer": l, "probe_score": p, "kurtosis": k}
            for s, l, p, k in [("none", 0, 0.5, 3.0), ("none", 1, 0.8, 3.0), ("none", 2, 0.6, 3.0),
                               ("memory", 0, 0.5, 3.0), ("memory", 1, 0.2, 2.0), ("memory", 2, 0.4, 2.0),
                               ("context", 0, 0.5, 3.0), ("context", 1, 0.9, 5.0), ("context", 2, 0.7, 4.0)]]
    drop, rise = trajectory_effects(rows, edited_layer=0)
    assert np.isclose(drop, 0.4) and np.isclose(rise, 1.5)
    assert np.isnan(trajectory_effects(rows, edited_layer=2)[0])

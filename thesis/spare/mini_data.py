"""Prompt sets of the miniature drawn from the synthetic world: facts split into dev and test,
conflict prompts (fresh conflicting value, a source), their consistent and closed-book twins."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from thesis.spare.synth import World


@dataclass
class PromptSet:
    """Parallel lists: prompt text under conflict, consistent and closed-book contexts, answers."""

    conflict: list[str]
    consistent: list[str]
    closed: list[str]
    context_answers: list[tuple[str]]
    memory_answers: list[tuple[str]]
    groups: list[str]
    sources: np.ndarray


def split_facts(world: World, n_dev: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    facts = world.facts[rng.permutation(len(world.facts))]
    return facts[:n_dev], facts[n_dev:]


def prompt_set(world: World, facts: np.ndarray, rng: np.random.Generator, all_sources: bool = False) -> PromptSet:
    """One conflict prompt per fact (random source), or one per fact and source."""
    if all_sources:
        facts = np.repeat(facts, world.n_sources, axis=0)
        sources = np.tile(np.arange(world.n_sources), len(facts) // world.n_sources)
    else:
        sources = rng.integers(world.n_sources, size=len(facts))
    e, r = facts[:, 0], facts[:, 1]
    values = world.conflicting_values(e, r, rng)
    text = lambda rows: [" ".join(row) for row in rows]  # noqa: E731
    return PromptSet(text(world.tokens(e, r, values, sources, "conflict", rng)),
                     text(world.tokens(e, r, values, sources, "consistent", rng)),
                     text(world.tokens(e, r, values, sources, "closed", rng)),
                     [(f"v{v}",) for v in values], [(f"v{world.truth[a, b]}",) for a, b in zip(e, r)],
                     [f"e{a}r{b}" for a, b in zip(e, r)], sources)

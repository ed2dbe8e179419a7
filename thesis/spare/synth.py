"""The synthetic knowledge-conflict world of the miniature (spec C.3, recipe "v2", `gate=trust`).

E entities x R relations -> one true value each (of V). Each fact is strong or weak (50/50), which
shows only in training statistics: weak facts are seen half as often closed-book. Every context
starts with one of 8 source tokens of trust linspace(0.05, 0.95). Sequences have a fixed length:
`c s e r v ; e' r' v' ; q e r ?` -> one answer token (the relevant statement and a true distractor
in random order); closed-book replaces the context by `-`. Under a conflicting context the
training label is the context value with probability clip(trust - shift) for strong facts and
clip(trust + shift) for weak ones, the memorised value otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")
MARKERS = ("c", "q", "?", ";", "-")


@dataclass
class World:
    n_entities: int = 200
    n_relations: int = 4
    n_values: int = 64
    n_sources: int = 8
    strength_shift: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        rng = np.random.default_rng(self.seed)
        self.truth = rng.integers(self.n_values, size=(self.n_entities, self.n_relations))
        self.strong = rng.random((self.n_entities, self.n_relations)) < 0.5
        self.trust = np.linspace(0.05, 0.95, self.n_sources)
        self.vocab = [*SPECIALS, *MARKERS, *(f"s{i}" for i in range(self.n_sources)),
                      *(f"e{i}" for i in range(self.n_entities)), *(f"r{i}" for i in range(self.n_relations)),
                      *(f"v{i}" for i in range(self.n_values))]
        self.index = {token: i for i, token in enumerate(self.vocab)}

    @property
    def facts(self) -> np.ndarray:
        """(E * R, 2) array of (entity, relation)."""
        e, r = np.meshgrid(np.arange(self.n_entities), np.arange(self.n_relations), indexing="ij")
        return np.stack([e.ravel(), r.ravel()], 1)

    def p_context(self, entity: np.ndarray, relation: np.ndarray, source: np.ndarray) -> np.ndarray:
        shift = np.where(self.strong[entity, relation], -self.strength_shift, self.strength_shift)
        return np.clip(self.trust[source] + shift, 0.02, 0.98)

    def tokens(self, entity, relation, value, source, kind: str, rng: np.random.Generator) -> list[list[str]]:
        """Token lists of prompts; kind = closed | consistent (value ignored) | conflict."""
        rows = []
        for e, r, v, s in zip(entity, relation, value, source):
            if kind == "closed":
                context = ["c", "-", "-", "-", "-", ";", "-", "-", "-", ";"]
            else:
                shown = self.truth[e, r] if kind == "consistent" else v
                other_e = (e + 1 + rng.integers(self.n_entities - 1)) % self.n_entities
                other_r = rng.integers(self.n_relations)
                statements = [[f"e{e}", f"r{r}", f"v{shown}"],
                              [f"e{other_e}", f"r{other_r}", f"v{self.truth[other_e, other_r]}"]]
                if rng.random() < 0.5:
                    statements.reverse()
                context = ["c", f"s{s}", *statements[0], ";", *statements[1], ";"]
            rows.append([*context, "q", f"e{e}", f"r{r}", "?"])
        return rows

    def ids(self, token_rows: list[list[str]]) -> torch.Tensor:
        return torch.tensor([[self.index["<bos>"]] + [self.index[t] for t in row] for row in token_rows])

    def conflicting_values(self, entity: np.ndarray, relation: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        true = self.truth[entity, relation]
        return (true + 1 + rng.integers(self.n_values - 1, size=len(true))) % self.n_values

    def training_batch(self, n: int, rng: np.random.Generator, mixture: tuple[float, float, float]) -> tuple[torch.Tensor, torch.Tensor]:
        """(ids (n, L), answer ids (n,)) from the training mixture (closed, consistent, conflict)."""
        kinds = rng.choice(3, size=n, p=np.asarray(mixture) / sum(mixture))
        facts = self.facts
        weight = np.where(self.strong[facts[:, 0], facts[:, 1]], 1.0, 0.5)
        rows, answers = [], []
        for kind, count in zip(("closed", "consistent", "conflict"), np.bincount(kinds, minlength=3)):
            if not count:
                continue
            p = weight / weight.sum() if kind == "closed" else None
            pick = facts[rng.choice(len(facts), size=count, p=p)]
            e, r = pick[:, 0], pick[:, 1]
            source = rng.integers(self.n_sources, size=count)
            value = self.conflicting_values(e, r, rng)
            rows += self.tokens(e, r, value, source, kind, rng)
            truth = self.truth[e, r]
            if kind == "conflict":
                use_context = rng.random(count) < self.p_context(e, r, source)
                answers += np.where(use_context, value, truth).tolist()
            else:
                answers += truth.tolist()
        order = rng.permutation(n)
        ids = self.ids(rows)[order]
        labels = torch.tensor([self.index[f"v{a}"] for a in answers])[order]
        return ids, labels


def word_tokenizer(world: World):
    """A transformers tokenizer over the world's vocabulary (whitespace-separated, <bos> prepended)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.WordLevel({t: i for i, t in enumerate(world.vocab)}, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<bos>", eos_token="<eos>",
                                   pad_token="<pad>", unk_token="<unk>")

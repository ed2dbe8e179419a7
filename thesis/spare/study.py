"""The shared first half of the SpARE analysis runs (Figs. 5.5, 5.6, 5.10-5.13): the same memorised set,
dev / test split and dev collection as `run_spare` (spec A.4-A.5), and the test evaluation of one
steering edit over the demonstration seeds, with the unsteered predictions generated once per seed."""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import DictConfig

from thesis.spare.em import steering_metrics
from thesis.spare.generation import generate
from thesis.spare.kc_data import Instance, dev_test_split, prompt, sample_demos
from thesis.spare.pipeline import Collected, collect
from thesis.spare.runner import collection_prompts, score
from thesis.spare.setup import load_instances, load_model, memorised


@dataclass
class Study:
    """Model, split and dev collection of one run; `evaluate` scores an edit on the test prompts."""

    cfg: DictConfig
    model: object
    tokenizer: object
    dev: list[Instance]
    test: list[Instance]
    collected: Collected | None = None
    _base: dict[int, tuple[list[str], list[str]]] = field(default_factory=dict)

    @property
    def gen(self) -> dict[str, int]:
        return dict(max_new_tokens=self.cfg.data.max_new_tokens, batch_size=self.cfg.method.batch_size)

    def test_prompts(self, seed: int, style: str = "doo", context: str = "sub_context") -> list[str]:
        data = self.cfg.data
        return [prompt(i, sample_demos(self.dev, data.k_shot, seed, i.group), style, context) for i in self.test]

    def base(self, seed: int) -> tuple[list[str], list[str]]:
        """(prompts, unsteered predictions) of one demonstration seed, generated once."""
        if seed not in self._base:
            prompts = self.test_prompts(seed)
            self._base[seed] = prompts, generate(self.model, self.tokenizer, prompts, **self.gen)
        return self._base[seed]

    def evaluate(self, edits_for=None) -> list[dict]:
        """The six EM metrics per demonstration seed for `edits_for(direction) -> {layer: edit}`;
        None scores the unsteered predictions (the no-control row)."""
        rows = []
        for seed in self.cfg.data.demo_seeds:
            prompts, base = self.base(seed)
            steered = {d: base if edits_for is None else
                       generate(self.model, self.tokenizer, prompts, edits=edits_for(d), **self.gen)
                       for d in ("context", "memory")}
            base_c, base_m = score(self.cfg, base, self.test)
            to_c = score(self.cfg, steered["context"], self.test)
            to_m = score(self.cfg, steered["memory"], self.test)
            rows.append({"demo_seed": seed, **steering_metrics(base_c, base_m, *to_c, *to_m)})
        return rows

    def collect(self, layers: list[int]) -> Collected:
        """Dev activations of `layers` grouped by behaviour, as `run_spare` collects them."""
        method = self.cfg.method
        prompts, owners = collection_prompts(self.dev, method.collect)
        self.collected = collect(self.model, self.tokenizer, prompts, [o.sub_answer for o in owners],
                                 [o.org_answer for o in owners], layers, method.grouping, method.weighting, **self.gen)
        return self.collected


def prepare(cfg: DictConfig) -> Study:
    """Load the model and data and split the memorised set into dev groups and test rows."""
    data = cfg.data
    model, tokenizer = load_model(cfg)
    rows, pool = load_instances(data)
    known = memorised(model, tokenizer, rows, pool, data, cfg.method.batch_size)
    dev, test = dev_test_split(known, data.n_dev_groups, data.dev_seed)
    return Study(cfg, model, tokenizer, dev, test[:data.max_test] if data.max_test else test)

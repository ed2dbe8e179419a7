"""Runner `run_prepare_memorised` (spec D, `prepare_memorised_*`): the closed-book k-shot step of
spec A.5 on its own, for inspection. Each row's greedy closed-book answer, whether it matches the
memory answer, and where the row lands in the dev / test split that `run_spare` draws from the
memorised rows (the same `dev_test_split`); `run_spare` recomputes the set itself, reading nothing
from here. Writes `tables/memorised.csv`."""

from __future__ import annotations

from omegaconf import DictConfig

from thesis.core.rundir import RunDir
from thesis.spare.em import exact_match
from thesis.spare.generation import generate
from thesis.spare.kc_data import block, demo_text, dev_test_split, sample_demos
from thesis.spare.setup import load_instances, load_model


def run_prepare_memorised(cfg: DictConfig, run: RunDir) -> dict[str, object]:
    data = cfg.data
    model, tokenizer = load_model(cfg)
    rows, pool = load_instances(data)
    prompts = [demo_text(sample_demos(pool, data.memorised.k_shot, data.dev_seed, r.group), "closed")
               + block(None, r.question) for r in rows]
    answers = generate(model, tokenizer, prompts, data.max_new_tokens, cfg.method.batch_size)
    known = [exact_match(a, r.org_answer) for r, a in zip(rows, answers)]
    kept = [r for r, k in zip(rows, known) if k or not data.memorised.required]
    dev, test = dev_test_split(kept, data.n_dev_groups, data.dev_seed)
    split = {**{r.idx: "dev" for r in dev}, **{r.idx: "test" for r in test}}
    run.write_table("memorised", [{"idx": r.idx, "group": r.group, "closed_book_answer": a, "memorised": k,
                                   "split": split.get(r.idx, "not_memorised")}
                                  for r, a, k in zip(rows, answers, known)])
    return {"n_rows": len(rows), "n_memorised": int(sum(known)), "memorised_rate": 100 * sum(known) / max(len(rows), 1),
            "n_dev": len(dev), "n_dev_groups": len({r.group for r in dev}), "n_test": len(test)}

"""`condcomp_mini`: Chapter 2's primitives trained on real digits, with pre-registered claims.

Three models share the data and the schedule: a dense MLP (reference), its early-exit twin trained
with the joint loss (2.15) and evaluated with confidence exits at many thresholds, and a top-1
token-choice MoE trained with and without the Switch balancing loss. The claims and their
thresholds live in the method config and were fixed before the first run.
"""

from __future__ import annotations

from hydra.utils import instantiate
from omegaconf import DictConfig

from thesis.condcomp.analysis import best_saving_within, coefficient_of_variation, early_exit_curve, expert_load
from thesis.core.claims import claim, claim_metrics
from thesis.core.flops import count_flops
from thesis.core.rundir import RunDir
from thesis.core.seeding import seed_everything
from thesis.core.train import fit


def run_condcomp_mini(cfg: DictConfig, run: RunDir) -> dict[str, object]:
    method, claims = cfg.method, cfg.method.claims
    datamodule = instantiate(cfg.data)
    datamodule.setup()
    test = datamodule.test_dataloader()
    example = next(iter(test))[0][:1]
    metrics: dict[str, object] = {}

    seed_everything(cfg.seed)  # every stage starts from the seed, so a resumed run matches
    dense = instantiate(cfg.model.dense)
    result = fit(instantiate(method.dense, model=dense), datamodule, cfg, run, stage="dense")
    metrics.update({"dense/test_acc": result["test/acc"], "dense/flops": count_flops(dense, example).total})

    seed_everything(cfg.seed)
    exits = instantiate(cfg.model.early_exit)
    result = fit(instantiate(method.early_exit, model=exits), datamodule, cfg, run, stage="early_exit")
    curve = early_exit_curve(exits, test, method.thresholds, rule=method.exit_rule)
    run.write_table("early_exit_curve", curve)
    best = best_saving_within(curve, claims.max_accuracy_drop)
    metrics.update({"early_exit/final_acc": result["test/acc"], "early_exit/full_flops": curve[-1]["flops"],
                    "early_exit/best_setting": best["setting"], "early_exit/best_acc": best["accuracy"],
                    "early_exit/best_flops_fraction": best["flops_fraction"]})

    load_rows, cv = [], {}
    for coef in method.balance_coefs:
        seed_everything(cfg.seed)
        moe = instantiate(cfg.model.moe)
        result = fit(instantiate(method.moe, model=moe, balance_coef=coef), datamodule, cfg, run,
                     stage=f"moe_balance{coef:g}")
        load = expert_load(moe, test)
        cv[coef] = coefficient_of_variation(load)
        load_rows += [{"balance_coef": coef, "expert": e, "load": float(v)} for e, v in enumerate(load)]
        metrics.update({f"moe/balance{coef:g}/test_acc": result["test/acc"], f"moe/balance{coef:g}/load_cv": cv[coef]})
    run.write_table("expert_load", load_rows)
    metrics["moe/flops"] = count_flops(moe.eval(), example).total

    off, on = min(method.balance_coefs), max(method.balance_coefs)
    rows = [
        claim("C1", f"cheapest confidence exit within {claims.max_accuracy_drop:g} of the last exit's accuracy "
                     "uses at most this fraction of full-depth FLOPs",
               best["flops_fraction"], "<=", claims.max_flops_fraction),
        claim("C2", f"expert-load CV with balancing ({on:g}) over CV without ({off:g})",
               cv[on] / max(cv[off], 1e-12), "<=", claims.max_cv_ratio),
    ]
    run.write_table("claims", rows)
    metrics.update(claim_metrics(rows))
    return metrics

"""Runners of Section 5.2: `run_moegt` trains and tests one classifier (the Table 5.4 rows, one
seed per run; seeds are a Hydra sweep) and writes its interpretability tables; `run_moegt_mini`
trains the four models of Table 5.7 on synthetic events in one run and checks the miniature's
claims, whose thresholds are fixed in the method config."""

from __future__ import annotations

from hydra.utils import instantiate
from omegaconf import DictConfig

from thesis.core.claims import claim, claim_metrics
from thesis.core.rundir import RunDir
from thesis.core.seeding import seed_everything
from thesis.core.train import fit
from thesis.moegt.analysis import attention_rows, inspect, routing_rows, specialisation
from thesis.moegt.metrics import binary_metrics
from thesis.moegt.moe import NoisyTopKMoE

METRICS = ("acc", "precision", "recall", "f1", "auc")


def num_experts(model) -> int:
    moe = [m for m in model.modules() if isinstance(m, NoisyTopKMoE)]
    return len(moe[0].experts) if moe else 0


def train_and_inspect(name: str, model_cfg: DictConfig, datamodule, cfg: DictConfig, run: RunDir) -> dict[str, object]:
    """Fit one model (stage `name`), then write its routing and attention tables; returns
    `<name>/<metric>` test metrics and, for MoE models, per-layer NMI before and after training."""
    seed_everything(cfg.seed)
    model = instantiate(model_cfg)
    experts = num_experts(model)
    metrics: dict[str, object] = {}
    if experts:
        before = inspect(model, datamodule.test_dataloader())
        metrics.update({f"{name}/init/{k}": v for k, v in specialisation(before["routing"], experts).items()})
    module = instantiate(cfg.method.module, model=model)
    fit(module, datamodule, cfg, run, stage=name)
    after = inspect(module.model, datamodule.test_dataloader())
    metrics.update({f"{name}/{k}": v for k, v in binary_metrics(after["labels"], after["scores"]).items()})
    if experts:
        metrics.update({f"{name}/{k}": v for k, v in specialisation(after["routing"], experts).items()})
        run.write_table(f"{name}_routing", routing_rows(after["routing"], experts))
    if after["attention"]:
        run.write_table(f"{name}_attention", attention_rows(after["attention"]))
    return metrics


def run_moegt(cfg: DictConfig, run: RunDir) -> dict[str, object]:
    datamodule = instantiate(cfg.data)
    datamodule.setup()
    metrics = train_and_inspect(cfg.method.name, cfg.model, datamodule, cfg, run)
    run.write_table("metrics", [{"model": cfg.method.name,
                                 **{m: metrics[f"{cfg.method.name}/{m}"] for m in METRICS}}])
    return metrics


def mini_claims(metrics: dict[str, object], models: set[str], mgt_layers: int, limits: DictConfig) -> list[dict]:
    """The pre-registered claims whose models this run trained: C1 needs MGT and GT, C2 also the
    GCN, C3 the MGT alone (so the MGT-only control runs check C3 on their own inputs)."""
    rows = []
    if {"mgt", "gt"} <= models:
        rows.append(claim("C1", "MGT test AUC minus GT test AUC (MGT matches or beats GT)",
                          metrics["mgt/auc"] - metrics["gt/auc"], ">=", -limits.auc_tolerance))
    if {"mgt", "gt", "gcn"} <= models:
        rows.append(claim("C2", "lower of GT and MGT test AUC minus GCN test AUC (GCN on a complete graph is weakest)",
                          min(metrics["mgt/auc"], metrics["gt/auc"]) - metrics["gcn/auc"], ">=", limits.min_gcn_gap))
    if "mgt" in models:
        last = f"layer{mgt_layers}/nmi"
        rows.append(claim("C3", "NMI(node type; expert) of the last MoE layer, trained minus at initialisation",
                          metrics[f"mgt/{last}"] - metrics[f"mgt/init/{last}"], ">=", limits.min_nmi_gain))
    return rows


def run_moegt_mini(cfg: DictConfig, run: RunDir) -> dict[str, object]:
    """Train every model of `cfg.model` on one split of synthetic events, then the claims they allow."""
    datamodule = instantiate(cfg.data)
    datamodule.setup()
    metrics: dict[str, object] = {}
    for name, model_cfg in cfg.model.items():
        metrics.update(train_and_inspect(name, model_cfg, datamodule, cfg, run))
    run.write_table("metrics", [{"model": name, **{m: metrics[f"{name}/{m}"] for m in METRICS}}
                                for name in cfg.model])
    layers = cfg.model.mgt.layers if "mgt" in cfg.model else 0
    rows = mini_claims(metrics, set(cfg.model), layers, cfg.method.claims)
    run.write_table("claims", rows)
    metrics.update(claim_metrics(rows))
    return metrics

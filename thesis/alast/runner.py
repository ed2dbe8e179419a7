"""Runner of the thesis-scale ALaST experiments: one (model, dataset, method, seed) fine-tuning run.

The dataset is set up first so that the model gets a head of the right size (timm re-initialises
the classifier of pre-trained weights when `num_classes` differs). Metrics: test accuracy, the
costs C / M / T of `thesis.alast.meter`, final budgets, and the run's setting (model, data,
method) so that collected `runs.csv` rows say which table cell they fill.
"""

from __future__ import annotations

from hydra.utils import instantiate
from omegaconf import DictConfig

from thesis.core.rundir import RunDir
from thesis.core.train import fit


def run_finetune(cfg: DictConfig, run: RunDir) -> dict[str, object]:
    datamodule = instantiate(cfg.data)
    datamodule.setup()
    model = instantiate(cfg.model, num_classes=datamodule.num_classes)
    module = instantiate(cfg.method.module, model=model)
    metrics: dict[str, object] = {"setting/model": cfg.model.name, "setting/data": datamodule.name,
                                  "setting/method": cfg.method.label,
                                  "setting/k": cfg.method.module.schedule.get("k")}
    metrics.update(fit(module, datamodule, cfg, run))
    metrics.update(module.final_metrics(datamodule=datamodule, run=run))
    return metrics

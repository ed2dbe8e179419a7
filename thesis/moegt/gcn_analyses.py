"""Runners of the Section 5.2 GCN analyses (thesis S4):

- `run_feature_hiding`: trains the classifier on all features, writes its output-score histogram
  and the Delta R(b1, b2) / m(b1, b2) distributions of its high- and low-score test events
  (Fig. 5.30) and the input-feature distributions per process (Fig. 5.21), then retrains it once
  per hidden feature group (`method.hidden_groups`, `thesis.moegt.hiding`) and reports each group's
  test-AUC drop;
- `run_dm_groups`: trains and tests the classifier on one Delta m group of the signal at a time
  (`method.dm_groups`, `thesis.moegt.dm_groups`).

Both check the miniature's claims of spec A.8 items 5-6 with thresholds from the method config.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from thesis.core.claims import claim, claim_metrics
from thesis.core.rundir import RunDir
from thesis.core.seeding import seed_everything
from thesis.core.train import fit
from thesis.moegt.distributions import bin_edges, feature_distribution_rows, score_band_rows, score_histogram_rows
from thesis.moegt.dm_groups import FrameSource, dm_group_events
from thesis.moegt.figures import feature_figure, score_figure
from thesis.moegt.hiding import with_hidden_features
from thesis.moegt.kinematics import b_pair_kinematics
from thesis.moegt.metrics import roc_auc
from thesis.moegt.runner import train_and_inspect


@torch.no_grad()
def scores_on_test_split(model, datamodule) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Signal probability, label and row of `datamodule.events` of every test event."""
    model.eval()
    parts = [(model(b).logits.softmax(-1)[:, 1].numpy(), b.y.numpy(), b.event.numpy())
             for b in datamodule.test_dataloader()]
    return tuple(np.concatenate(p) for p in zip(*parts))


def fit_and_score(stage: str, datamodule, cfg: DictConfig, run: RunDir) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Train a fresh `cfg.model` (seeded by `cfg.seed`, best-validation weights) and score the test split."""
    seed_everything(cfg.seed)
    module = instantiate(cfg.method.module, model=instantiate(cfg.model))
    fit(module, datamodule, cfg, run, stage=stage)
    return scores_on_test_split(module.model, datamodule)


def write_distributions(cfg: DictConfig, run: RunDir, datamodule, scores, labels, events) -> None:
    """Fig. 5.30 and Fig. 5.21 tables and figures of the model trained on all features."""
    hist = cfg.method.histograms
    tested = datamodule.events.iloc[events]
    bands = score_band_rows(b_pair_kinematics(tested), scores, labels,
                            {v: bin_edges(hist[v]) for v in ("delta_r_bb", "m_bb")})
    score_rows = score_histogram_rows(scores, labels, hist.score_bins)
    features = feature_distribution_rows(datamodule.events, {c: bin_edges(s) for c, s in hist.features.items()})
    run.write_table(f"{cfg.method.name}_scores", score_rows)
    run.write_table(f"{cfg.method.name}_score_bands", bands)
    run.write_table("feature_distributions", features)
    score_figure(pd.DataFrame(score_rows), pd.DataFrame(bands), run.path, f"moegt_{cfg.method.name}_scores")
    feature_figure(pd.DataFrame(features), run.path)


def run_feature_hiding(cfg: DictConfig, run: RunDir) -> dict[str, object]:
    name = cfg.method.name
    datamodule = instantiate(cfg.data)
    datamodule.setup()
    scores, labels, events = fit_and_score(name, datamodule, cfg, run)
    write_distributions(cfg, run, datamodule, scores, labels, events)
    full_auc = roc_auc(labels, scores)
    metrics: dict[str, object] = {f"{name}/auc": full_auc}
    drops, rows = {}, []
    for group, columns in cfg.method.hidden_groups.items():
        hidden = with_hidden_features(datamodule, list(columns))
        group_scores, group_labels, _ = fit_and_score(f"{name}_hide_{group}", hidden, cfg, run)
        auc = roc_auc(group_labels, group_scores)
        drops[group] = full_auc - auc
        rows.append({"model": name, "hidden": group, "columns": " ".join(columns), "auc": auc,
                     "auc_all_features": full_auc, "auc_drop": drops[group]})
        metrics.update({f"hide/{group}/auc": auc, f"hide/{group}/auc_drop": drops[group]})
    run.write_table("feature_hiding", rows)
    limits = cfg.method.claims
    claims = [claim("H1", f"smallest AUC drop of {'/'.join(limits.largest)} minus largest of {'/'.join(limits.others)} "
                          "(hiding pT of b1, b2 or of lepton and E_T^miss hurts most)",
                    min(drops[g] for g in limits.largest) - max(drops[g] for g in limits.others), ">=",
                    limits.min_margin)]
    run.write_table("claims", claims)
    metrics.update(claim_metrics(claims))
    return metrics


def run_dm_groups(cfg: DictConfig, run: RunDir) -> dict[str, object]:
    """One training per Delta m group, in the config's order (increasing Delta m)."""
    name = cfg.method.name
    events = instantiate(cfg.data.source).load()
    metrics: dict[str, object] = {}
    rows = []
    for group, bounds in cfg.method.dm_groups.items():
        table = dm_group_events(events, bounds.low, bounds.high, cfg.method.balance, cfg.data.split_seed)
        datamodule = instantiate(cfg.data, source=FrameSource(table))
        datamodule.setup()
        stage = f"{name}_{group}"
        metrics.update(train_and_inspect(stage, cfg.model, datamodule, cfg, run))
        rows.append({"model": name, "group": group, "dm_low": bounds.low, "dm_high": bounds.high,
                     "signal_events": int(table.label.sum()), "background_events": int((table.label == 0).sum()),
                     "auc": metrics[f"{stage}/auc"]})
    run.write_table("dm_groups", rows)
    aucs = [row["auc"] for row in rows]
    claims = [claim("D1", "smallest AUC step between consecutive Delta m groups (AUC rises with Delta m)",
                    float(np.min(np.diff(aucs))) if len(aucs) > 1 else 0.0, ">=", cfg.method.claims.min_auc_step)]
    run.write_table("claims", claims)
    metrics.update(claim_metrics(claims))
    return metrics

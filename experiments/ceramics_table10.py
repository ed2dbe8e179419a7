"""Sec. 5.5, Table 10: test accuracy and macro precision / recall / F1 (mean ± std over seeds), thesis vs ours.

Reference: `results/reference/ceramics_table10.csv` (typed from the thesis). Ours, where collected:
the paper-scale runs `ceramics_{resnet18,deit_small}_{scratch,pretrained}` (real thin sections), and
the miniature `ceramics_mini` on synthetic thin sections, both splits, with `synthetic_pretrain`
(texture-pretrained frozen backbone) in the place of ImageNet weights, and the by-image minus
by-sample gap (leakage). Cells stay empty until the runs are collected.
"""

from pathlib import Path

import pandas as pd

from thesis.core.io import atomic_write_text
from thesis.results import markdown_table

KIND = "table"
INPUTS = ("reference/ceramics_table10.csv",)
PAPER = {"ceramics_resnet18_scratch": ("ResNet18", "scratch"), "ceramics_resnet18_pretrained": ("ResNet18", "pretrained"),
         "ceramics_deit_small_scratch": ("ViT (DeiT-S)", "scratch"),
         "ceramics_deit_small_pretrained": ("ViT (DeiT-S)", "pretrained")}
METRICS = {"accuracy": "acc", "precision": "precision", "recall": "recall", "f1": "f1"}
MINI = "ceramics_mini/metrics.csv"


def cell(values: pd.Series) -> str:
    values = values.dropna() * 100
    if values.empty:
        return ""
    spread = values.std(ddof=1) if len(values) > 1 else 0.0
    return f"{values.mean():.2f} ± {spread:.2f} (n={len(values)})"


def paper_runs(results: Path) -> dict[tuple[str, str], pd.DataFrame]:
    found = {}
    for experiment, key in PAPER.items():
        path = results / experiment / "metrics.csv"
        if path.is_file():
            found[key] = pd.read_csv(path)
    return found


def render(results: Path) -> list[Path]:
    reference = pd.read_csv(results / INPUTS[0])
    ours = paper_runs(results)
    rows = []
    for metric, column in METRICS.items():
        row = {"metric": metric}
        for (model, init), part in reference.groupby(["model", "init"], sort=False):
            ref = part[part.metric == metric].iloc[0]
            name = f"{model} {init}"
            row[f"{name}: thesis"] = f"{100 * ref['mean']:.2f} ± {100 * ref['std']:.2f}"
            row[f"{name}: ours"] = cell(ours[(model, init)][column]) if (model, init) in ours else ""
        rows.append(row)
    parts = ["Percent, mean ± std over seeds; ours: paper-scale runs on the real thin sections (empty until "
             "collected).", "", markdown_table(pd.DataFrame(rows)), ""]
    if (results / MINI).is_file():
        mini = pd.read_csv(results / MINI)
        lines = []
        for (split, arch, init), part in mini.groupby(["split", "arch", "init"], sort=True):
            lines.append({"split": split, "model": arch, "init": init,
                          **{metric: cell(part[column]) for metric, column in METRICS.items()}})
        parts += ["### Miniature (`ceramics_mini`, synthetic thin sections; synthetic_pretrain = texture-pretrained, "
                  "frozen backbone)", "", markdown_table(pd.DataFrame(lines)), ""]
        wide = mini.pivot_table(index=["seed", "arch", "init"], columns="split", values="acc").dropna()
        if {"image_random_80_20", "grouped_by_sample"} <= set(wide.columns):
            gap = (wide["image_random_80_20"] - wide["grouped_by_sample"]).groupby(level=["arch", "init"]).agg(
                ["mean", "std"]) * 100
            gap_rows = [{"model": a, "init": i, "by-image minus by-sample accuracy (points)": f"{m:.2f} ± {s:.2f}"}
                        for (a, i), (m, s) in gap.fillna(0.0).iterrows()]
            parts += ["Leakage estimate (our addition): by-image minus by-sample test accuracy.", "",
                      markdown_table(pd.DataFrame(gap_rows)), ""]
    return [atomic_write_text(results / "tables" / "ceramics_table10.md", "\n".join(parts))]

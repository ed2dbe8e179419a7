"""Sec. 3.2, Tables 3.2-3.8: the thesis's numbers, with the reproduced ones beside them where runs exist.

Reference: `results/reference/alast_*.csv` (typed from the thesis, caveats in their `note` column).
Reproduced: the collected paper-scale runs of `alast_deit_t`, `alast_deit_s`, `alast_vit_b` and
`alast_ksweep_deit_s` (mean over seeds of C in PFLOPs, peak memory in MB, time in minutes, accuracy);
a cell stays empty until its run has been collected.
"""

from pathlib import Path

import pandas as pd

from thesis.core.io import atomic_write_text
from thesis.results import markdown_table

KIND = "table"
INPUTS = ("reference/alast_main.csv", "reference/alast_lora.csv", "reference/alast_ksweep.csv")
RUNS = ("alast_deit_t/runs.csv", "alast_deit_s/runs.csv", "alast_vit_b/runs.csv")
MODELS = {"deit_tiny_patch16_224": "DeiT-T", "deit_small_patch16_224": "DeiT-S", "vit_base_patch16_224": "ViT-B"}
DATASETS = {"food101": "Food-101", "cifar100": "CIFAR-100", "flowers102": "Flowers-102"}
METHODS = {"ft_head": "FT head", "ft_full": "FT full", "ft_top3": "FT top-3", "bsr": "BSR", "lora": "LoRA",
           "alast": "ALaST", "lora_alast": "LoRA + ALaST", "tome": "ToMe"}
MEASURED = {"cost/train_pflops": "C ours", "memory/peak_mb": "M ours", "time/train_min": "T ours", "test/acc": "Acc ours"}


def reproduced(results: Path, files, keys: list[str]) -> pd.DataFrame:
    """Mean over seeds of the measured columns per setting, from whichever runs.csv files exist."""
    frames = [pd.read_csv(results / f) for f in files if (results / f).is_file()]
    if not frames:
        return pd.DataFrame(columns=keys + list(MEASURED.values()))
    runs = pd.concat(frames, ignore_index=True)
    runs["model"] = runs["setting/model"].map(MODELS)
    runs["dataset"] = runs["setting/data"].map(DATASETS)
    runs["method"] = runs["setting/method"].map(METHODS)
    if "k" in keys:
        runs = runs[runs["setting/method"] == "alast"].rename(columns={"setting/k": "k"})
    return runs.groupby(keys)[list(MEASURED)].mean().rename(columns=MEASURED).reset_index()


def side_by_side(reference: pd.DataFrame, ours: pd.DataFrame, keys: list[str]) -> str:
    merged = reference.merge(ours, on=keys, how="left")
    return markdown_table(merged.fillna(""))


def render(results: Path) -> list[Path]:
    main, lora, ksweep = (pd.read_csv(results / name) for name in INPUTS)
    keys = ["model", "dataset", "method"]
    ours = reproduced(results, RUNS, keys)
    parts = ["C = training PFLOPs (ours: 1 multiply-add = 1 FLOP), M = peak memory MB, T = minutes.", ""]
    for table, part in main.groupby("table", sort=False):
        parts += [f"### Table {table}", "", side_by_side(part.drop(columns="table"), ours, keys), ""]
    for table, part in lora.groupby("table", sort=False):
        parts += [f"### Table {table}", "", side_by_side(part.drop(columns="table"), ours, keys), ""]
    sweep = reproduced(results, ("alast_ksweep_deit_s/runs.csv",), ["k"])
    parts += ["### Table 3.7 (ours: DeiT-S on Food-101)", "", side_by_side(ksweep.drop(columns="table"), sweep, ["k"]), ""]
    return [atomic_write_text(results / "tables" / "alast_reference_tables.md", "\n".join(parts))]

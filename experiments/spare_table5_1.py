"""Table 5.1: EM_M (steer to memory) and EM_C (steer to context) per method, model and dataset; the
thesis's numbers, with the reproduced mean ± std beside them where a paper-scale run was collected
(`results/spare_<model>_<dataset>/em.csv`)."""

from pathlib import Path

import pandas as pd

from thesis.core.io import atomic_write_text
from thesis.results import markdown_table

KIND = "table"
INPUTS = ("reference/spare_table5_1.csv",)
MODELS = {"llama3_8b": "llama3", "llama2_7b": "llama2", "gemma2_9b": "gemma2"}


def reproduced(results: Path, model: str, dataset: str) -> pd.DataFrame | None:
    path = results / f"spare_{MODELS[model]}_{dataset}" / "em.csv"
    if not path.is_file():
        return None
    frame = pd.read_csv(path)
    frame = frame[frame.get("scale", "paper") != "smoke"] if "scale" in frame else frame
    rule = "substring_of_context" if dataset == "macnoise" else "exact"
    frame = frame[frame.em_rule == rule]
    frame["method"] = frame.method.replace({"spare_full": "spare"})
    return frame.groupby("method")[["em_m", "em_c"]].agg(["mean", "std"])


def render(results: Path) -> list[Path]:
    reference = pd.read_csv(results / INPUTS[0])
    rows = []
    for (metric, method), part in reference.groupby(["metric", "method"], sort=False):
        row = {"metric": metric.upper(), "method": method}
        for _, cell in part.iterrows():
            column = f"{cell.dataset} {cell.model}"
            row[f"{column} (thesis)"] = f"{cell['mean']:.2f} ± {cell['std']:.2f}"
            ours = reproduced(results, cell.model, cell.dataset)
            if ours is not None and method in ours.index:
                row[f"{column} (ours)"] = f"{ours.loc[method, (metric, 'mean')]:.2f} ± {ours.loc[method, (metric, 'std')]:.2f}"
        rows.append(row)
    path = results / "tables" / "spare_table5_1.md"
    return [atomic_write_text(path, markdown_table(pd.DataFrame(rows).fillna("—")) + "\n")]

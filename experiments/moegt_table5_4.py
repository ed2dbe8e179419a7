"""Sec. 5.2, analogue of thesis Table 5.4: test metrics of GCN, MLP, GT and MGT, mean ± std over seeds.

The miniature (`moegt_mini`, synthetic events in the release's schema) beside the thesis's numbers
(10 seeds on the SUSY test set). The two rows answer different questions: the thesis rows are about
the physics data, the miniature rows about the same models on the project's generator.
"""

from pathlib import Path

import pandas as pd

from thesis.core.io import atomic_write_text
from thesis.results import markdown_table

KIND = "table"
INPUTS = ("moegt_mini/metrics.csv", "reference/moegt_table5_4.csv")
MODELS = ("gcn", "mlp", "gt", "mgt")
METRICS = {"acc": "accuracy", "precision": "precision", "recall": "recall", "f1": "f1", "auc": "auc"}


def render(results: Path) -> list[Path]:
    mini = pd.read_csv(results / INPUTS[0])
    reference = pd.read_csv(results / INPUTS[1])
    rows = []
    for model in MODELS:
        part = mini[mini.model == model]
        row = {"model": model.upper(), "seeds": part.seed.nunique()}
        for column, metric in METRICS.items():
            mean = part[column].mean()
            row[f"mini {metric}"] = f"{mean:.3f} ± {part[column].std(ddof=1):.4f}" if len(part) > 1 else f"{mean:.3f}"
            ref = reference[(reference.model == model.upper()) & (reference.metric == metric)]
            row[f"thesis {metric}"] = f"{ref['mean'].iloc[0]:.3f} ± {ref['std'].iloc[0]:.4f}" if len(ref) else "-"
        rows.append(row)
    path = results / "tables" / "moegt_table5_4.md"
    return [atomic_write_text(path, markdown_table(pd.DataFrame(rows)) + "\n")]

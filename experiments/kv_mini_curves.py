"""Chapter 4 miniature (spec F.b), `kv_mini_gpu`: Spearman correlation of each score with the attention
keys receive (Figs. 4.1, 4.40, 4.50 analogues), perplexity against the cache budget (Figs. 4.3, 4.31a)
and passkey / NIAH accuracy against the compression ratio (Figs. 4.4, 4.43); seeds averaged.
"""

from pathlib import Path

import pandas as pd

from thesis.kvcache.mini import figures

KIND = "figure"
INPUTS = ("kv_mini_gpu/heads.csv", "kv_mini_gpu/streaming.csv", "kv_mini_gpu/retrieval.csv")


def render(results: Path) -> list[Path]:
    heads, streaming, retrieval = (pd.read_csv(results / name) for name in INPUTS)
    streaming = streaming.groupby(["protocol", "method", "ratio", "window", "budget"], as_index=False, dropna=False)[
        ["ppl_beyond_budget", "full_ppl_beyond_budget"]].mean()
    retrieval = retrieval.groupby(["task", "method", "ratio", "query_aware"], as_index=False)["accuracy"].mean()
    figures.correlation_histogram(heads, results)
    figures.ppl_vs_budget(streaming, results)
    figures.accuracy_vs_ratio(retrieval, results)
    names = ("kv_mini_correlation", "kv_mini_ppl_vs_budget", "kv_mini_accuracy_vs_ratio")
    return [results / "figures" / f"{name}.{ext}" for name in names for ext in ("png", "pdf")]

"""Fig. 5.4 (spare_detail_nqswap): the NQSwap scatter plots over the three models' `run_spare` tables
(`tables/em.csv` of spare_{llama3,llama2,gemma2}_nqswap), colour = method, marker = model:
(a) EM_C→M vs EM_M→C, (b) EM_M→M vs EM_C→C, (c) the SpARE ablations, EM_M vs EM_C.
A method with several grid cells (ActAdd layer x alpha, SEA / TaskVec layer, DoLa bucket) is drawn at
its cell with the largest EM_C→M + EM_M→C, chosen on these test rows: the paper-scale runs select no
cell on dev (thesis/spare/README.md, 'Not built'), so that choice is optimistic for the baselines."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from thesis.core.plotting import new_figure, plt
from thesis.spare.runner import EM_KEYS

ABLATIONS = ("spare", "spare_input_independent", "spare_remove_only", "spare_add_only")
MARKERS = {"llama3_8b": "o", "llama2_7b": "s", "gemma2_9b": "^"}


def method_family(method: str) -> str:
    """`spare_full` -> spare; grid cells `<family>_l<layer>[_a<alpha>]` and `dola_<bucket>` -> their family."""
    if method == "spare_full":
        return "spare"
    if method.startswith("dola_"):
        return "dola"
    return re.sub(r"_l\d+(_a[-\d.e]+)?$", "", method)


def scatter_points(em: pd.DataFrame, rule: str = "exact") -> pd.DataFrame:
    """Seed means per (model, method) under one EM_C rule, one row per family (its best cell)."""
    frame = em[em.em_rule == rule]
    means = frame.groupby(["model", "method"])[list(EM_KEYS)].mean().reset_index()
    means["family"] = means.method.map(method_family)
    means["score"] = means.em_c_to_m.fillna(0) + means.em_m_to_c.fillna(0)
    best = means.loc[means.groupby(["model", "family"]).score.idxmax()]
    return best.drop(columns="score").reset_index(drop=True)


def plot_fig5_4(points: pd.DataFrame, stem: Path) -> None:
    fig, axes = new_figure(width=14, height=4, ncols=3)
    families = [f for f in points.family.unique() if f not in ABLATIONS[1:]]
    colours = {family: f"C{i}" for i, family in enumerate(families + list(ABLATIONS[1:]))}
    panels = [(axes[0], "em_c_to_m", "em_m_to_c", families, "(a) changing behaviour"),
              (axes[1], "em_m_to_m", "em_c_to_c", families, "(b) keeping behaviour"),
              (axes[2], "em_m", "em_c", ["no_control", *ABLATIONS], "(c) ablations")]
    for ax, x, y, shown, title in panels:
        for _, row in points[points.family.isin(shown)].iterrows():
            ax.scatter(row[x], row[y], color=colours.get(row.family, "grey"), marker=MARKERS.get(row.model, "x"),
                       label=f"{row.family} ({row.model})")
        ax.set(xlabel=x.upper().replace("_TO_", "→"), ylabel=y.upper().replace("_TO_", "→"), title=title)
        ax.legend(fontsize=5)
    stem.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(f"{stem}.png", dpi=130)
    plt.close(fig)

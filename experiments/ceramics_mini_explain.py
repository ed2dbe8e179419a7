"""Sec. 5.5 miniature: what the explanations point at (mean ± std over seeds). Left: energy-in-mask ratio of
Grad-CAM on the class-discriminative grains and on the distractor grains (1 = no preference), trained
vs random-init ResNet; middle: correlation of de-rotated Grad-CAM with the 0-degree map per stage
rotation (calcite, quartz; Figs. 5.65-5.66); right: normalised entropy of the ViT's class-token
attention per layer (Fig. 5.67's "early layers broad, deeper layers focused")."""

from pathlib import Path

import pandas as pd

from thesis.core.plotting import new_figure, save_figure

KIND = "figure"
INPUTS = ("ceramics_mini/localisation_summary.csv", "ceramics_mini/rotation.csv", "ceramics_mini/attention_entropy.csv")


def render(results: Path) -> list[Path]:
    loc, rot, ent = (pd.read_csv(results / name) for name in INPUTS)
    fig, axes = new_figure(11.0, 3.4, ncols=3)
    stats = loc.groupby(["model", "mask"])["ratio"].agg(["mean", "std"]).reset_index()
    models = list(dict.fromkeys(stats["model"]))
    for k, mask in enumerate(("cue", "distractor")):
        part = stats[stats["mask"] == mask].set_index("model").reindex(models)
        axes[0].bar([i + 0.38 * k for i in range(len(models))], part["mean"], width=0.38,
                    yerr=part["std"].fillna(0), label=mask)
    axes[0].set_xticks([i + 0.19 for i in range(len(models))], models, fontsize=7, rotation=10)
    axes[0].axhline(1.0, color="grey", lw=0.8, ls="--")
    axes[0].set_ylabel("Grad-CAM energy-in-mask ratio")
    axes[0].legend(fontsize=7)
    for cls, part in rot.groupby("class_id"):
        curve = part.groupby(["seed", "rotation_deg"])["corr_with_0deg"].mean().groupby("rotation_deg").agg(["mean", "std"])
        axes[1].errorbar(curve.index, curve["mean"], yerr=curve["std"].fillna(0), marker="o", capsize=2,
                         label={1: "calcite", 6: "quartz"}.get(int(cls), f"class {cls}"))
    axes[1].set_xlabel("stage rotation (deg)")
    axes[1].set_ylabel("corr. with the 0-deg Grad-CAM")
    axes[1].legend(fontsize=7)
    curve = ent.groupby("layer")["entropy"].agg(["mean", "std"])
    axes[2].errorbar(curve.index, curve["mean"], yerr=curve["std"].fillna(0), marker="o", capsize=2)
    axes[2].set_xlabel("ViT layer")
    axes[2].set_ylabel("normalised CLS-attention entropy")
    return save_figure(fig, results, "ceramics_mini_explain")

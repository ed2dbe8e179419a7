"""Fig. 5.4 / 5.5 analogues of `spare_mini`: EM_{C->M} vs EM_{M->C} per method, the ablations
(EM_M vs EM_C), and single-layer SpARE gains by layer, mean over seeds on the test facts."""

from pathlib import Path

import pandas as pd

from thesis.core.plotting import new_figure, save_figure

KIND = "figure"
INPUTS = ("spare_mini/em.csv",)
METHODS = ("no_control", "spare", "actadd", "taskvec", "cad", "control_flipped", "control_random_latents")
ABLATIONS = ("no_control", "spare", "spare_input_independent", "spare_remove_only", "spare_add_only")


def render(results: Path) -> list[Path]:
    frame = pd.read_csv(results / INPUTS[0])
    test = frame[frame.split == "test"].groupby("method")[["em_c", "em_m", "em_c_to_m", "em_m_to_c"]].mean()
    fig, axes = new_figure(width=14, height=4, ncols=3)
    for name in METHODS:
        if name in test.index:
            axes[0].scatter(test.loc[name, "em_c_to_m"], test.loc[name, "em_m_to_c"], label=name)
    axes[0].set(xlabel="EM C→M", ylabel="EM M→C", title="(a) changing the behaviour")
    for name in ABLATIONS:
        if name in test.index:
            axes[1].scatter(test.loc[name, "em_m"], test.loc[name, "em_c"], label=name)
    axes[1].set(xlabel="EM_M (steered to memory)", ylabel="EM_C (steered to context)", title="(c) ablations")
    layers = sorted(int(m.removeprefix("spare_single_layer")) for m in test.index if m.startswith("spare_single_layer"))
    none = test.loc["no_control"]
    for key, label in (("em_c", "→C: EM_C gain"), ("em_m", "→M: EM_M gain")):
        axes[2].plot(layers, [test.loc[f"spare_single_layer{l}", key] - none[key] for l in layers], "o-", label=label)
    axes[2].set(xlabel="edited layer", ylabel="points over no control", title="single-layer SpARE (Fig. 5.5)")
    for ax in axes:
        ax.legend(fontsize=6)
    return save_figure(fig, results, "spare_mini_em")

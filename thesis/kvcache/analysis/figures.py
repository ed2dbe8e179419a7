"""The per-(layer, head) heat-map the analysis figures share (Figs. 4.2, 4.40, 4.50)."""

from __future__ import annotations

from typing import Any

from matplotlib.ticker import MaxNLocator
from torch import Tensor


def layer_head_heatmap(fig: Any, ax: Any, values: Tensor, title: str, **style: Any) -> None:
    """values (layers, heads) as an image with layer 0 at the bottom, integer ticks and a colour bar."""
    image = ax.imshow(values.numpy(), aspect="auto", origin="lower", **style)
    ax.set_title(title)
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    fig.colorbar(image, ax=ax)

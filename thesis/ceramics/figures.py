"""PNG grids that the runs of Section 5.5 write into `<run>/figures/` (images, heat maps, attention),
the analogues of Figs. 5.61-5.67, B1 and B2. Numbers behind them go to the run's tables."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from thesis.core.plotting import plt  # Agg backend, set once for the project

MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])


def to_rgb(x, mean: Sequence[float] = MEAN, std: Sequence[float] = STD) -> np.ndarray:
    """A normalised (3, H, W) tensor or array back to an (H, W, 3) image in [0, 1]."""
    x = np.asarray(x.detach().cpu() if hasattr(x, "detach") else x, dtype=np.float64)
    return np.clip(x.transpose(1, 2, 0) * np.asarray(std) + np.asarray(mean), 0, 1)


def _save(fig, path: Path, tight: bool = True) -> Path:
    path = Path(path)
    if tight:
        fig.subplots_adjust(left=0.06, right=0.98, bottom=0.03, top=0.93, wspace=0.06, hspace=0.32)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, metadata={"Software": None})
    plt.close(fig)
    return path


def _clean(axes) -> None:
    for ax in np.ravel(axes):
        ax.set_xticks([])
        ax.set_yticks([])


def overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    colour = plt.get_cmap("jet")(np.clip(heat, 0, 1))[..., :3]
    return np.clip((1 - alpha) * image + alpha * colour, 0, 1)


def keep_important(image: np.ndarray, heat: np.ndarray, quantile: float = 0.7) -> np.ndarray:
    """The image where the map is above its `quantile`, black elsewhere (the thesis's third panel)."""
    return image * (heat >= np.quantile(heat, quantile))[..., None]


def guided_image(product: np.ndarray) -> np.ndarray:
    """A (3, H, W) guided Grad-CAM product shown as an image (centred, scaled to [0, 1])."""
    g = np.asarray(product, dtype=np.float64).transpose(1, 2, 0)
    g = g - g.mean()
    g = g / (3 * g.std() + 1e-12)
    return np.clip(g + 0.5, 0, 1)


def gradcam_grid(images: Sequence[np.ndarray], cams: Sequence[np.ndarray], products: Sequence[np.ndarray],
                 titles: Sequence[str], path: Path) -> Path:
    """One row per image: original / Grad-CAM overlay / guided Grad-CAM / important areas kept."""
    n = len(images)
    fig, axes = plt.subplots(n, 4, figsize=(6.4, 1.7 * n + 0.3), squeeze=False)
    for i, (image, cam, product, title) in enumerate(zip(images, cams, products, titles)):
        axes[i, 0].imshow(image)
        axes[i, 0].set_ylabel(title, fontsize=6)
        axes[i, 1].imshow(overlay(image, cam))
        axes[i, 2].imshow(guided_image(product))
        axes[i, 3].imshow(keep_important(image, cam))
    for j, name in enumerate(("image", "Grad-CAM", "guided Grad-CAM", "important areas")):
        axes[0, j].set_title(name, fontsize=7)
    _clean(axes)
    return _save(fig, path)


def rotation_grid(images: Sequence[np.ndarray], cams: Sequence[np.ndarray], angles: Sequence[float],
                  predictions: Sequence[str], path: Path, title: str = "") -> Path:
    """Columns = stage rotations; rows: image, Grad-CAM overlay, important areas."""
    n = len(images)
    fig, axes = plt.subplots(3, n, figsize=(1.5 * n + 0.4, 4.8), squeeze=False)
    for j, (image, cam, angle, pred) in enumerate(zip(images, cams, angles, predictions)):
        axes[0, j].imshow(image)
        axes[0, j].set_title(f"{angle:g} deg, pred {pred}", fontsize=7)
        axes[1, j].imshow(overlay(image, cam))
        axes[2, j].imshow(keep_important(image, cam))
    if title:
        fig.suptitle(title, fontsize=8)
    _clean(axes)
    return _save(fig, path)


def attention_grid(images: Sequence[np.ndarray], maps: Sequence[np.ndarray], row_names: Sequence[str],
                   path: Path, column_names: Sequence[str] | None = None, title: str = "") -> Path:
    """Rows = images (e.g. PPL and XPL); columns = the image then one map per layer (or head).
    `maps[i]` is (columns, h, w), upsampled to the image by nearest neighbour."""
    n, m = len(images), len(maps[0])
    fig, axes = plt.subplots(n, m + 1, figsize=(1.25 * (m + 1) + 0.3, 1.35 * n + 0.4), squeeze=False)
    for i, (image, stack) in enumerate(zip(images, maps)):
        axes[i, 0].imshow(image)
        axes[i, 0].set_ylabel(row_names[i], fontsize=7)
        size = image.shape[0]
        for j, amap in enumerate(stack):
            reps = max(1, size // amap.shape[0])
            big = np.kron(amap, np.ones((reps, reps)))
            axes[i, j + 1].imshow(image)
            axes[i, j + 1].imshow(big / (big.max() + 1e-12), cmap="inferno", alpha=0.7,
                                  extent=(-0.5, size - 0.5, size - 0.5, -0.5))
            if i == 0 and column_names is not None:
                axes[i, j + 1].set_title(column_names[j], fontsize=7)
    if title:
        fig.suptitle(title, fontsize=8)
    _clean(axes)
    return _save(fig, path)


def image_grid(images: Sequence[np.ndarray], titles: Sequence[str], path: Path, columns: int = 4,
               title: str = "") -> Path:
    n = max(1, len(images))
    rows = (n + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(1.6 * columns, 1.75 * rows + 0.3), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, image, text in zip(axes.ravel(), images, titles):
        ax.axis("on")
        ax.imshow(image)
        ax.set_title(text, fontsize=6)
    if title:
        fig.suptitle(title, fontsize=8)
    _clean(axes)
    return _save(fig, path)


def _confusion_axes(ax, matrix: np.ndarray, class_ids: Sequence[int], title: str) -> None:
    ax.imshow(matrix, cmap="Blues")
    peak = matrix.max()
    for i, j in zip(*np.nonzero(matrix)):
        ax.text(j, i, str(int(matrix[i, j])), ha="center", va="center", fontsize=5,
                color="white" if matrix[i, j] > peak / 2 else "black")
    ax.set_xticks(range(len(class_ids)), [str(c) for c in class_ids], fontsize=6)
    ax.set_yticks(range(len(class_ids)), [str(c) for c in class_ids], fontsize=6)
    ax.set_xlabel("predicted class", fontsize=7)
    ax.set_ylabel("true class", fontsize=7)
    ax.set_title(title, fontsize=7)


def _curve_axes(ax, curve: Sequence[dict]) -> None:
    epochs = [r["epoch"] for r in curve]
    for key, name in (("train_acc", "train"), ("val_acc", "test")):
        points = [(e, r[key]) for e, r in zip(epochs, curve) if key in r]
        if points:
            ax.plot(*zip(*points), label=name, marker=".")
    ax.set_xlabel("epoch", fontsize=7)
    ax.set_ylabel("accuracy", fontsize=7)
    ax.tick_params(labelsize=6)
    ax.legend(fontsize=6)


def confusion_panels(panels: Sequence[tuple[str, np.ndarray, Sequence[dict] | None]], class_ids: Sequence[int],
                     path: Path) -> Path:
    """One row per (title, confusion matrix, curve): the matrix (true rows, predicted columns) and,
    when a curve is given, train/test accuracy per epoch (Fig. 5.62)."""
    with_curves = any(curve for _, _, curve in panels)
    cols = 2 if with_curves else 1
    fig, axes = plt.subplots(len(panels), cols, figsize=(3.4 * cols, 3.0 * len(panels)), squeeze=False)
    for row, (title, matrix, curve) in enumerate(panels):
        _confusion_axes(axes[row, 0], matrix, class_ids, title)
        if with_curves:
            if curve:
                _curve_axes(axes[row, 1], curve)
            else:
                axes[row, 1].axis("off")
    fig.subplots_adjust(left=0.1, right=0.97, bottom=0.06, top=0.95, wspace=0.35, hspace=0.45)
    return _save(fig, path, tight=False)


def confusion_figure(matrix: np.ndarray, class_ids: Sequence[int], path: Path, title: str = "",
                     curve: Sequence[dict] | None = None) -> Path:
    """One confusion matrix and, if given, its train/test accuracy curve."""
    return confusion_panels([(title, matrix, curve)], class_ids, path)

"""Offline fixtures of the ceramics chapter's sources, in their real on-disk formats (see fixtures.py)."""

from __future__ import annotations

from pathlib import Path

from thesis.core.fixtures import fixture


@fixture("thinsection_tiny")
def thinsection_tiny(out: Path) -> None:
    """The thin-section layout of spec C.5 written by the seeded synthetic generator: 20 samples
    (2 per fabric class) x 8 images (PPL/XPL x 2.5X/10X x 2 fields) of 64 x 64 px under
    `<class_id>/<sample_id>__<PPL|XPL>__<2.5X|10X>__<k>.png`, `metadata.csv` (one row per image),
    per-pixel masks under `_masks/`, and a stage-rotation series (30 and 60 degrees, 10X) of the
    first sample of classes 1 and 6."""
    from thesis.ceramics.synthetic import GeneratorConfig, write_dataset

    write_dataset(out, GeneratorConfig(num_samples=20, image_size=64, min_per_class=2, intermediate_fraction=0.5,
                                       rotation_samples=1, rotation_classes=(1, 6), rotation_angles=(30.0, 60.0)))

"""The pre-training textures and the result recipes of Sec. 5.5 (on CSVs shaped like collected runs)."""

import shutil

import numpy as np
import pandas as pd
import torch

from thesis import results as pipeline
from thesis.ceramics.textures import NUM_CLASSES, TextureDataset, render_texture


def test_textures_are_seeded_and_cover_twenty_classes():
    a, b = TextureDataset(40, 24, seed=3), TextureDataset(40, 24, seed=3)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert NUM_CLASSES == 20 and a.images.shape == (40, 3, 24, 24)
    image = render_texture(5, 32, np.random.default_rng(0))
    assert image.shape == (32, 32, 3) and 0 <= image.min() and image.max() <= 1


def fake_mini(results):
    """results/ceramics_mini/*.csv as `make collect` writes them, for two seeds."""
    meta = lambda seed: {"experiment": "ceramics_mini", "run": f"h{seed}", "seed": seed, "scale": "paper",  # noqa: E731
                         "git_commit": "abc", "git_dirty": False}
    metrics, confusion, curves, claims, loc, rot, ent = [], [], [], [], [], [], []
    rng = np.random.default_rng(0)
    for seed in (0, 1):
        for split in ("image_random_80_20", "grouped_by_sample"):
            for arch in ("resnet", "vit"):
                for init in ("scratch", "synthetic_pretrain"):
                    keys = {**meta(seed), "arch": arch, "init": init, "split": split}
                    metrics.append({**keys, "acc": rng.random(), "precision": 0.5, "recall": 0.5, "f1": 0.5})
                    confusion += [{**keys, "true": t, "pred": p, "count": int(rng.integers(0, 5))}
                                  for t in range(1, 11) for p in range(1, 11)]
                    curves += [{**keys, "epoch": e, "train_acc": e / 10, **({"val_acc": e / 12} if e % 3 == 0 else {})}
                               for e in range(1, 11)]
        claims.append({**meta(seed), "claim": "T1", "statement": "s", "value": 0.1, "direction": ">=",
                       "threshold": 0.0, "passed": True})
        loc += [{**meta(seed), "model": m, "mask": k, "ratio": 1.5, "guided_ratio": 2.0, "pointing": 0.5}
                for m in ("resnet/scratch", "random_init") for k in ("cue", "distractor")]
        rot += [{**meta(seed), "class_id": c, "sample_id": "S1", "rotation_deg": a, "pred": c, "same_pred": True,
                 "corr_with_0deg": 1 - a / 200} for c in (1, 6) for a in (0, 45, 90)]
        ent += [{**meta(seed), "model": "vit/scratch", "layer": l, "entropy": 1 - l / 20} for l in range(1, 7)]
    folder = results / "ceramics_mini"
    folder.mkdir(parents=True)
    for name, rows in (("metrics", metrics), ("confusion", confusion), ("curves", curves), ("claims", claims),
                       ("localisation_summary", loc), ("rotation", rot), ("attention_entropy", ent)):
        pd.DataFrame(rows).to_csv(folder / f"{name}.csv", index=False)


def test_ceramics_recipes_render(tmp_path):
    results = tmp_path / "results"
    shutil.copytree(pipeline.RESULTS_DIR / "reference", results / "reference")
    fake_mini(results)
    found = {k: v for k, v in pipeline.recipes().items() if k.startswith("ceramics_")}
    assert {"ceramics_table10", "ceramics_mini_claims", "ceramics_mini_confusion", "ceramics_mini_explain",
            "ceramics_reference_setup"} <= set(found)
    for recipe in found.values():
        written = recipe.render(results)
        assert written and all(p.stat().st_size > 0 for p in written)
    table = (results / "tables" / "ceramics_table10.md").read_text()
    assert "76.33 ± 0.58" in table and "Leakage estimate" in table and "synthetic_pretrain" in table

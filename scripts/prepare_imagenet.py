"""Lay out ImageNet-1k (ILSVRC2012) as the ImageFolder tree the datamodules read.

    python scripts/prepare_imagenet.py --src /datasets/imagenet --out data/imagenet

`--src` is the Kaggle "ImageNet Object Localization Challenge" release: it holds
`ILSVRC/Data/CLS-LOC/{train,val}` and `LOC_val_solution.csv` (ImageId, PredictionString whose
first word is the validation image's WordNet id). The output gets symlinks, not copies:
`<out>/train/<wnid>/*.JPEG` and `<out>/val/<wnid>/*.JPEG`.
"""

from __future__ import annotations

import argparse
import csv
import os
from pathlib import Path


def link_train(src: Path, out: Path) -> int:
    (out / "train").mkdir(parents=True, exist_ok=True)
    count = 0
    for wnid_dir in sorted((src / "ILSVRC/Data/CLS-LOC/train").iterdir()):
        target = out / "train" / wnid_dir.name
        if not target.exists():
            os.symlink(wnid_dir.resolve(), target)
        count += 1
    return count


def link_val(src: Path, out: Path) -> int:
    count = 0
    with open(src / "LOC_val_solution.csv") as handle:
        for row in csv.DictReader(handle):
            wnid = row["PredictionString"].split()[0]
            target = out / "val" / wnid / f"{row['ImageId']}.JPEG"
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.exists():
                os.symlink((src / "ILSVRC/Data/CLS-LOC/val" / target.name).resolve(), target)
            count += 1
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if not (args.src / "LOC_val_solution.csv").is_file():
        raise SystemExit(f"error: {args.src}/LOC_val_solution.csv not found: --src must be the Kaggle ILSVRC release")
    print(f"train classes: {link_train(args.src, args.out)}, val images: {link_val(args.src, args.out)}")


if __name__ == "__main__":
    main()

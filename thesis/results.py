"""The results pipeline: run directories -> long-form CSVs -> figures and tables -> index.

    python -m thesis.results collect [--outputs outputs]   # run dirs into results/<experiment>/*.csv
    python -m thesis.results figures                        # every figure recipe in experiments/
    python -m thesis.results tables                         # every table recipe
    python -m thesis.results render <id>                    # one recipe (make fig-<id>)
    python -m thesis.results index                          # regenerate results/README.md

Recipes are `experiments/<id>.py` files defining `KIND` ("figure" or "table"), `INPUTS` (CSV paths
relative to results/) and `render(results_dir) -> list[Path]`; they read only CSVs under
results/, so every committed figure and table rebuilds in seconds without rerunning anything.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pandas as pd

from thesis.core.io import atomic_write_text, read_json

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "results"
RECIPES_DIR = REPO_ROOT / "experiments"
RUN_COLUMNS = ("experiment", "run", "seed", "scale", "git_commit", "git_dirty")


def run_metadata(run_dir: Path) -> dict[str, object]:
    prov = read_json(run_dir / "provenance.json") if (run_dir / "provenance.json").is_file() else {}
    git = prov.get("git", {})
    return {
        "experiment": run_dir.parent.name,
        "run": run_dir.name,
        "seed": prov.get("seed"),
        "scale": prov.get("scale"),
        "git_commit": git.get("commit"),
        "git_dirty": git.get("dirty"),
    }


def finished_runs(outputs: Path, include_smoke: bool = False) -> list[Path]:
    """Run directories holding metrics.json, smoke runs left out unless asked for."""
    runs = sorted(p.parent for p in outputs.glob("*/*/metrics.json") if not p.parent.parent.name.startswith("."))
    return [r for r in runs if include_smoke or run_metadata(r)["scale"] != "smoke"]


def collect(outputs: Path, results: Path = RESULTS_DIR, include_smoke: bool = False,
            replace: bool = False) -> list[Path]:
    """Write `results/<experiment>/runs.csv` (one row per run) and every per-run table, concatenated.

    A per-run table `<run>/tables/<name>.csv` becomes `results/<experiment>/<name>.csv` with the
    run's metadata columns in front. Rows are sorted so that re-collecting gives identical files.
    Rows of runs already in a results CSV whose run directories are not under `outputs` (a seed
    collected earlier, its outputs since deleted) are kept, so that adding a seed never drops the
    committed ones; `replace=True` rewrites each CSV from `outputs` alone.
    """
    rows: dict[str, list[dict]] = {}
    tables: dict[tuple[str, str], list[pd.DataFrame]] = {}
    for run_dir in finished_runs(outputs, include_smoke):
        meta = run_metadata(run_dir)
        rows.setdefault(meta["experiment"], []).append({**meta, **read_json(run_dir / "metrics.json")})
        for table in sorted((run_dir / "tables").glob("*.csv")):
            frame = pd.read_csv(table)
            for i, (key, value) in enumerate(meta.items()):
                if key in frame and (frame.pop(key) != value).any():
                    raise ValueError(f"{table}: column {key!r} disagrees with the run's {key} {value!r}; "
                                     "rename the column (run metadata columns are added by collect)")
                frame.insert(i, key, value)
            tables.setdefault((meta["experiment"], table.stem), []).append(frame)
    written = []
    for experiment, experiment_rows in rows.items():
        path = results / experiment / "runs.csv"
        frame = _with_earlier_runs(pd.DataFrame(experiment_rows), path, replace)
        written.append(_write_csv(frame.sort_values(["seed", "run"], na_position="last"), path))
    for (experiment, name), frames in tables.items():
        path = results / experiment / f"{name}.csv"
        frame = _with_earlier_runs(pd.concat(frames, ignore_index=True), path, replace)
        written.append(_write_csv(frame.sort_values(["seed", "run"], kind="stable"), path))
    return written


def _with_earlier_runs(frame: pd.DataFrame, path: Path, replace: bool) -> pd.DataFrame:
    """`frame` plus the rows of `path` that belong to runs `frame` does not hold."""
    if replace or not path.is_file():
        return frame
    earlier = pd.read_csv(path, dtype={"run": str})
    earlier = earlier[~earlier["run"].isin(frame["run"].astype(str))]
    return pd.concat([earlier, frame], ignore_index=True) if len(earlier) else frame


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table (pandas' own needs the optional `tabulate`)."""
    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(_cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def summarise_claims(claims: pd.DataFrame) -> pd.DataFrame:
    """One row per (experiment, claim): mean over seeds vs threshold, seeds passing, verdict.

    A claim is reproduced when its mean over seeds meets the threshold.
    """
    rows = []
    groups = claims.groupby(["experiment", "claim", "statement", "direction", "threshold"], sort=False)
    for (experiment, name, statement, direction, threshold), part in groups:
        mean = part.value.mean()
        holds = mean >= threshold if direction == ">=" else mean <= threshold
        spread = part.value.std(ddof=1) if len(part) > 1 else 0.0
        rows.append({"experiment": experiment, "claim": name, "statement": statement,
                     "threshold": f"{direction} {threshold:g}", "measured (mean ± std)": f"{mean:.4g} ± {spread:.2g}",
                     "seeds passing": f"{int(part.passed.sum())}/{len(part)}",
                     "verdict": "reproduced" if holds else "NOT reproduced"})
    return pd.DataFrame(rows)


def _cell(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _write_csv(frame: pd.DataFrame, path: Path) -> Path:
    return atomic_write_text(path, frame.to_csv(index=False, float_format="%.6g"))


@dataclass(frozen=True)
class Recipe:
    id: str
    kind: str
    inputs: tuple[str, ...]
    doc: str
    module: ModuleType

    def render(self, results: Path = RESULTS_DIR) -> list[Path]:
        missing = [i for i in self.inputs if not (results / i).is_file()]
        if missing:
            raise FileNotFoundError(f"{self.id}: missing {', '.join(missing)} under {results}; "
                                    "run its experiment, then `make collect`")
        return list(self.module.render(results))


def recipes(directory: Path = RECIPES_DIR) -> dict[str, Recipe]:
    found = {}
    for path in sorted(directory.glob("*.py")):
        spec = importlib.util.spec_from_file_location(f"recipes.{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        found[path.stem] = Recipe(path.stem, module.KIND, tuple(module.INPUTS),
                                  (module.__doc__ or "").strip(), module)
    return found


def render_all(kind: str, results: Path = RESULTS_DIR) -> list[Path]:
    """Render every recipe of `kind` whose CSVs exist; name the ones skipped for missing CSVs."""
    written = []
    for recipe in recipes().values():
        if recipe.kind != kind:
            continue
        missing = [i for i in recipe.inputs if not (results / i).is_file()]
        if missing:
            print(f"skipped {recipe.id}: no {', '.join(missing)} yet (run its experiment, then make collect)",
                  file=sys.stderr)
            continue
        written += recipe.render(results)
    return written


def write_index(results: Path = RESULTS_DIR) -> Path:
    """Generate results/README.md: every recipe, its outputs, reference tables and claims."""
    lines = ["# Results", "",
             "Generated by `make index` (`python -m thesis.results index`); do not edit by hand.",
             "Figures and tables rebuild from the CSVs here with `make figures tables`.", ""]
    for recipe in recipes().values():
        title = recipe.doc.splitlines()[0] if recipe.doc else recipe.id
        lines += [f"## {recipe.id} ({recipe.kind})", "", title, "",
                  f"- inputs: {', '.join(f'`{i}`' for i in recipe.inputs)}",
                  f"- rebuild: `make fig-{recipe.id}`", ""]
        for out in sorted(results.glob(f"figures/{recipe.id}.png")):
            lines += [f"![{recipe.id}](figures/{out.name})", ""]
        for out in sorted(results.glob(f"tables/{recipe.id}.md")):
            lines += [out.read_text().strip(), ""]
    claims = sorted(results.glob("*/claims.csv"))
    if claims:
        lines += ["## Pre-registered claims of the miniatures", ""]
        for path in claims:
            frame = pd.read_csv(path)[["seed", "run", "claim", "value", "direction", "threshold", "passed"]]
            lines += [f"### {path.parent.name} (per run)", "", markdown_table(frame), ""]
    references = sorted(results.glob("reference/*.csv"))
    if references:
        lines += ["## Thesis reference numbers", ""]
        lines += [f"- `reference/{p.name}`" for p in references] + [""]
    return atomic_write_text(results / "README.md", "\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m thesis.results", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    col = sub.add_parser("collect", help="run dirs -> results/<experiment>/*.csv")
    col.add_argument("--outputs", type=Path, default=Path("outputs"))
    col.add_argument("--include-smoke", action="store_true")
    col.add_argument("--replace", action="store_true",
                     help="rewrite each CSV from --outputs alone (default: keep rows of runs no longer there)")
    sub.add_parser("figures", help="render every figure recipe")
    sub.add_parser("tables", help="render every table recipe")
    one = sub.add_parser("render", help="render one recipe")
    one.add_argument("id")
    sub.add_parser("index", help="regenerate results/README.md")
    sub.add_parser("list", help="list recipes")
    args = parser.parse_args(argv)
    if args.command == "collect":
        written = collect(args.outputs, include_smoke=args.include_smoke, replace=args.replace)
    elif args.command in ("figures", "tables"):
        written = render_all(args.command[:-1])
    elif args.command == "render":
        available = recipes()
        if args.id not in available:
            sys.exit(f"error: no recipe {args.id!r}; available: {', '.join(available)}")
        written = available[args.id].render()
    elif args.command == "index":
        written = [write_index()]
    else:
        written = []
        for recipe in recipes().values():
            print(f"{recipe.id:32s} {recipe.kind:6s} {recipe.doc.splitlines()[0] if recipe.doc else ''}")
    for path in written:
        print(path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path)


if __name__ == "__main__":
    main()

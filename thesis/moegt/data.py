"""Event sources and the graph datamodule of Section 5.2.

A source returns one table of events: the release's raw columns (`graphs.RAW_COLUMNS`), `label`
(signal 1, background 0), `process` and, for synthetic signal, `dm`. Two sources exist:

- `OpenDataRelease`: the ATLAS simulated events of CERN open data record 28100 as distributed to
  the authors' loader: `<root>/signal/*.h5` (Wh_hbb_fullMix.h5), `<root>/singletop/*.h5`,
  `<root>/ttbar/*.h5`, pandas HDF5 tables (read with PyTables). A fixed number of events per process
  is drawn after a shuffle with random_state 42, as the thesis balances its benchmark:
  400,000 signal + 200,000 tt-bar + 200,000 single-top (Sec. 5.2.3, S3);
- `SyntheticRelease`: the seeded generator of `thesis.moegt.synthetic`, same columns.

`EventGraphDataModule` turns the table into graphs (`graphs.event_graph`), splits it 80/20 and the
80 % again 80/20 (64/16/20, stratified by label, `split_seed` fixed across run seeds), and
standardises node features with the training split's statistics.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import pandas as pd
import torch
from torch.utils.data import DataLoader
from torch_geometric.data import Data
from torch_geometric.loader.dataloader import Collater

import lightning as L

from thesis.core.data import stratified_split, training_loader
from thesis.core.errors import ConfigError, DataNotFoundError
from thesis.moegt.graphs import NODE_NAMES, RAW_COLUMNS, event_graph, raw_slots
from thesis.moegt.synthetic import generate_release

PROCESSES = ("signal", "singletop", "ttbar")
LABELS = {"signal": 1, "singletop": 0, "ttbar": 0}
THESIS_EVENT_COUNTS = {"signal": 400_000, "ttbar": 200_000, "singletop": 200_000}
SHUFFLE_STATE = 42
DOWNLOAD_HINT = ("download the ATLAS electroweakino simulation (CERN open data record 28100, "
                 "https://opendata.cern.ch/record/28100) as the pandas HDF5 tables signal/Wh_hbb_fullMix.h5, "
                 "singletop/singletop.h5 and ttbar/ttbar.h5, unpack them under that root (or set data.source.root)")
JETS_ONLY = tuple(NODE_NAMES.index(n) for n in ("j1", "j2", "j3", "b1", "b2"))


class EventSource(Protocol):
    def load(self) -> pd.DataFrame: ...


def _labelled(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    parts = [frame.assign(label=LABELS[process], process=process) for process, frame in sorted(frames.items())]
    return pd.concat(parts, ignore_index=True)


class OpenDataRelease:
    """The release under `root`; `event_counts` events per process (None: all of them)."""

    def __init__(self, root: str, event_counts: dict[str, int | None] | None = None):
        self.root = Path(root)
        self.event_counts = dict(event_counts or THESIS_EVENT_COUNTS)
        unknown = set(self.event_counts) - set(PROCESSES)
        if unknown:
            raise ConfigError(f"unknown process {sorted(unknown)[0]!r} in event_counts; use {', '.join(PROCESSES)}")

    def read_process(self, process: str) -> pd.DataFrame:
        folder = self.root / process
        files = sorted(folder.glob("*.h5"))
        if not files:
            raise DataNotFoundError(f"no {process} events: {folder}/*.h5 not found; {DOWNLOAD_HINT}")
        try:
            frame = pd.concat([pd.read_hdf(f) for f in files], ignore_index=True)
        except ImportError as exc:
            raise DataNotFoundError(f"cannot read {files[0]}: pandas needs PyTables for HDF5 (pip install tables)") \
                from exc
        missing = [c for c in RAW_COLUMNS if c not in frame.columns]
        if missing:
            raise DataNotFoundError(f"{files[0]} lacks the release's column {missing[0]!r}: is it the electroweakino "
                                    f"release? {DOWNLOAD_HINT}")
        wanted = self.event_counts[process]
        if wanted is not None and wanted > len(frame):
            raise ConfigError(f"data.source.event_counts.{process}={wanted} but {folder} holds {len(frame)} events")
        frame = frame.sample(n=wanted if wanted is not None else len(frame), random_state=SHUFFLE_STATE)
        return frame[[c for c in (*RAW_COLUMNS, "dm") if c in frame.columns]].reset_index(drop=True)

    def load(self) -> pd.DataFrame:
        return _labelled({process: self.read_process(process) for process in self.event_counts})


class SyntheticRelease:
    """Generated events (`thesis.moegt.synthetic`), `event_counts` per process."""

    def __init__(self, event_counts: dict[str, int], seed: int = 0, separation: float = 0.8):
        self.event_counts, self.seed, self.separation = dict(event_counts), seed, separation

    def load(self) -> pd.DataFrame:
        return _labelled(generate_release(self.event_counts, self.seed, self.separation))


def write_release(root: str | Path, frames: dict[str, pd.DataFrame]) -> None:
    """Write tables in the release's layout: <root>/<process>/<file>.h5 (pandas HDF5)."""
    names = {"signal": "Wh_hbb_fullMix.h5", "singletop": "singletop.h5", "ttbar": "ttbar.h5"}
    for process, frame in frames.items():
        folder = Path(root) / process
        folder.mkdir(parents=True, exist_ok=True)
        frame.to_hdf(folder / names[process], key="events", mode="w")


class Standardiser:
    """Column-wise (x - mean) / (std + eps) with statistics of the training graphs' nodes."""

    def __init__(self, graphs: list[Data], eps: float = 1e-6):
        nodes = torch.cat([g.x for g in graphs])
        self.mean, self.std, self.eps = nodes.mean(0), nodes.std(0, unbiased=False), eps

    def __call__(self, graph: Data) -> Data:
        graph.x = (graph.x - self.mean) / (self.std + self.eps)
        return graph


class EventGraphDataModule(L.LightningDataModule):
    """Graphs of `source`'s events. `node_features` must be 12 with `nan_flags`, 6 without (the
    models read it); `pe_k` = 0 drops the positional encoding; `truncate="jets_only"` keeps
    j1, j2, [j3], b1, b2."""

    def __init__(self, source: EventSource, batch_size: int = 500, eval_batch_size: int | None = None,
                 fractions: tuple[float, float, float] = (0.64, 0.16, 0.20), split_seed: int = 0,
                 nan_flags: bool = True, node_features: int = 12, pe_k: int = 4, standardise: bool = True,
                 truncate: str | None = None, num_workers: int = 0):
        super().__init__()
        if node_features != (12 if nan_flags else 6):
            raise ConfigError(f"data.node_features={node_features} does not match data.nan_flags={nan_flags}: "
                              "set node_features to 12 with NaN flags, 6 without")
        if truncate not in (None, "jets_only"):
            raise ConfigError(f"data.truncate={truncate!r}: use null or jets_only")
        self.source, self.batch_size, self.eval_batch_size = source, batch_size, eval_batch_size or batch_size
        self.fractions, self.split_seed = tuple(fractions), split_seed
        self.nan_flags, self.pe_k, self.standardise = nan_flags, pe_k, standardise
        self.keep_slots = JETS_ONLY if truncate else None
        self.num_workers = num_workers
        self.events: pd.DataFrame | None = None
        self.splits: dict[str, list[Data]] = {}

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        self.events = self.source.load()
        values, labels = raw_slots(self.events), self.events["label"].to_numpy()
        graphs = []
        for index, (row, label) in enumerate(zip(values, labels)):
            graph = event_graph(row, int(label), self.nan_flags, self.pe_k, self.keep_slots)
            graph.event = torch.tensor([index])
            graphs.append(graph)
        parts = stratified_split(labels, self.fractions, self.split_seed)
        self.splits = {name: [graphs[i] for i in idx] for name, idx in zip(("train", "val", "test"), parts)}
        if self.standardise:
            scale = Standardiser(self.splits["train"])
            for split in self.splits.values():
                for graph in split:
                    scale(graph)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        self.setup()
        graphs = self.splits[split]
        if shuffle:
            return training_loader(graphs, self.batch_size, self.num_workers, collate_fn=Collater(graphs))
        return DataLoader(graphs, batch_size=self.eval_batch_size, collate_fn=Collater(graphs),
                          num_workers=self.num_workers)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", False)

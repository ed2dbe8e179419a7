"""The release reader on its fixture, the synthetic generator and the datamodule."""

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from thesis.core.errors import ConfigError, DataNotFoundError
from thesis.core.fixtures import materialize
from thesis.moegt.data import EventGraphDataModule, OpenDataRelease, SyntheticRelease, write_release
from thesis.moegt.graphs import RAW_COLUMNS
from thesis.moegt.synthetic import generate_release

try:
    import tables  # noqa: F401  (PyTables, pandas' HDF5 engine)
    HAS_TABLES = True
except ImportError:
    HAS_TABLES = False
needs_tables = pytest.mark.skipif(not HAS_TABLES, reason="reading the release's HDF5 tables needs PyTables")


@needs_tables
def test_reader_parses_the_release_fixture(tmp_path):
    root = materialize("atlas_opendata_tiny", tmp_path)
    events = OpenDataRelease(str(root), {"signal": 80, "ttbar": 30, "singletop": 40}).load()
    assert list(events.columns) == [*RAW_COLUMNS, "label", "process"]  # runNumber dropped
    assert events.groupby("process")["label"].agg(["size", "first"]).to_dict() == {
        "size": {"signal": 80, "singletop": 40, "ttbar": 30}, "first": {"signal": 1, "singletop": 0, "ttbar": 0}}
    assert ((events.pTj3 == -99) | (events.pTj3 > 0)).all()


@needs_tables
def test_reader_draws_the_same_shuffled_subset_each_time(tmp_path):
    root = str(materialize("atlas_opendata_tiny", tmp_path))
    first = OpenDataRelease(root, {"ttbar": 10}).load()
    assert first.equals(OpenDataRelease(root, {"ttbar": 10}).load())


def test_missing_release_names_the_path_and_the_download(tmp_path):
    with pytest.raises(DataNotFoundError, match=r"signal.*\*\.h5 not found.*opendata.cern.ch/record/28100"):
        OpenDataRelease(str(tmp_path / "nowhere")).load()


@needs_tables
def test_asking_for_more_events_than_the_release_holds_is_an_error(tmp_path):
    root = str(materialize("atlas_opendata_tiny", tmp_path))
    with pytest.raises(ConfigError, match="holds 40 events"):
        OpenDataRelease(root, {"ttbar": 41}).load()


@needs_tables
def test_generator_is_deterministic_and_round_trips_through_the_release_format(tmp_path):
    counts = {"signal": 60, "ttbar": 30, "singletop": 30}
    frames = generate_release(counts, seed=3)
    again = generate_release(counts, seed=3)
    assert all(frames[p].equals(again[p]) for p in frames)
    assert not frames["signal"].equals(generate_release(counts, seed=4)["signal"])
    write_release(tmp_path, frames)
    read = OpenDataRelease(str(tmp_path), counts).load()
    assert len(read) == 120 and "dm" in read.columns


def invariant_mass_bb(frame):
    pt1, pt2, eta1, eta2, phi1, phi2 = (frame[c].to_numpy() for c in ("pTb1", "pTb2", "etab1", "etab2", "phib1",
                                                                     "phib2"))
    return np.sqrt(2 * pt1 * pt2 * (np.cosh(eta1 - eta2) - np.cos(phi1 - phi2)))  # massless b's


def test_synthetic_task_is_learnable_but_not_trivial():
    events = SyntheticRelease({"signal": 2000, "ttbar": 1000, "singletop": 1000}, seed=0).load()
    window = np.abs(invariant_mass_bb(events) - 125.0) < 25.0
    auc = roc_auc_score(events["label"], window)
    assert 0.6 < auc < 0.9
    six = events.pTj3 < 0
    assert np.allclose(events.loc[six, "pTj1"], np.maximum(events.loc[six, "pTb1"], events.loc[six, "pTb2"]))


def test_datamodule_splits_64_16_20_and_standardises_with_training_statistics():
    source = SyntheticRelease({"signal": 100, "ttbar": 50, "singletop": 50}, seed=0)
    data = EventGraphDataModule(source, batch_size=16)
    data.setup()
    sizes = {name: len(graphs) for name, graphs in data.splits.items()}
    assert sizes == {"train": 128, "val": 32, "test": 40}
    train = torch.cat([g.x for g in data.splits["train"]])
    assert torch.allclose(train.mean(0), torch.zeros(12), atol=1e-4)
    batch = next(iter(data.train_dataloader()))
    assert batch.num_graphs == 16 and batch.pe.shape[1] == 4


def test_node_features_must_match_the_nan_flags():
    with pytest.raises(ConfigError, match="node_features"):
        EventGraphDataModule(SyntheticRelease({"signal": 2}), nan_flags=False, node_features=12)

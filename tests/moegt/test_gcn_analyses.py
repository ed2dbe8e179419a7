"""The GCN analyses of thesis S4 on synthetic events: score-band and feature histograms (Figs.
5.21, 5.30), feature hiding and Delta m groups."""

import numpy as np
import pandas as pd
import pytest
import torch

from thesis.core.errors import ConfigError
from thesis.moegt.data import EventGraphDataModule, SyntheticRelease
from thesis.moegt.distributions import (bin_edges, feature_distribution_rows, in_band, score_band_rows,
                                        score_histogram_rows)
from thesis.moegt.dm_groups import FrameSource, dm_group_events
from thesis.moegt.figures import feature_figure, score_figure
from thesis.moegt.hiding import hidden_positions, with_hidden_features
from thesis.moegt.kinematics import b_pair_kinematics

EDGES = {"delta_r_bb": bin_edges([0.0, 6.0, 30]), "m_bb": bin_edges([0.0, 600.0, 30])}


@pytest.fixture(scope="module")
def events():
    return SyntheticRelease({"signal": 1000, "ttbar": 500, "singletop": 500}, seed=3).load()


def frame(rows):
    return pd.DataFrame(rows)


def total_area(table):
    return (table.density * (table.bin_high - table.bin_low)).sum()


def test_score_bands_are_strict_and_open_ended():
    scores = np.array([0.0, 0.2, 0.19, 0.5, 0.8, 0.81, 1.0])
    assert in_band(scores, "high").tolist() == [False] * 5 + [True, True]
    assert in_band(scores, "low").tolist() == [True, False, True, False, False, False, False]


def test_score_histogram_counts_every_event_once_per_class():
    scores, labels = np.array([0.0, 0.04, 0.5, 1.0, 1.0, 0.97]), np.array([0, 0, 0, 1, 1, 1])
    table = frame(score_histogram_rows(scores, labels, bins=10))
    counts = table.groupby("cls")["count"].sum().to_dict()
    assert counts == {"background": 3, "signal": 3}
    signal = table[table.cls == "signal"]
    assert signal["count"].iloc[-1] == 3  # 0.97 and the two scores of exactly 1
    assert total_area(signal) == pytest.approx(1.0)


def test_a_perfect_classifier_puts_only_signal_in_the_high_band(events):
    labels = events.label.to_numpy()
    scores = np.where(labels == 1, 0.95, 0.05)
    table = frame(score_band_rows(b_pair_kinematics(events), scores, labels, EDGES))
    counts = table.groupby(["variable", "band", "cls"])["count"].sum()
    assert counts[("m_bb", "high", "background")] == 0 and counts[("m_bb", "low", "signal")] == 0
    in_range = (b_pair_kinematics(events).delta_r_bb[labels == 1] < 6.0).sum()
    assert counts[("delta_r_bb", "high", "signal")] == in_range


def test_bands_of_a_delta_r_oracle_hold_only_its_delta_r(events):
    # a score that reads Delta R alone: close pairs score 0.9, distant ones 0.1, the rest 0.5
    kinematics = b_pair_kinematics(events)
    scores = np.select([kinematics.delta_r_bb < 1.0, kinematics.delta_r_bb > 3.0], [0.9, 0.1], 0.5)
    table = frame(score_band_rows(kinematics, scores, events.label.to_numpy(), EDGES))
    delta_r = table[(table.variable == "delta_r_bb") & (table["count"] > 0)]
    assert delta_r[delta_r.band == "high"].bin_high.max() <= 1.0 + 1e-9
    assert delta_r[delta_r.band == "low"].bin_low.min() >= 3.0 - 0.2  # the bin holding 3.0 starts at 2.8
    for _, group in table[table["count"] > 0].groupby(["variable", "band", "cls"]):
        assert total_area(group) == pytest.approx(1.0)


def test_generated_signal_b_pairs_are_closer_and_nearer_the_higgs_mass(events):
    labels = events.label.to_numpy()
    table = frame(score_band_rows(b_pair_kinematics(events), np.where(labels == 1, 0.9, 0.1), labels, EDGES))
    signal, background = (table[(table.cls == c) & (table.band == b)] for c, b in (("signal", "high"),
                                                                                   ("background", "low")))

    def mean(hist, variable):
        h = hist[hist.variable == variable]
        return np.average((h.bin_low + h.bin_high) / 2, weights=h["count"])

    def window_share(hist):
        h = hist[hist.variable == "m_bb"]
        return h["count"][(h.bin_low >= 100) & (h.bin_high <= 160)].sum() / h["count"].sum()

    assert mean(signal, "delta_r_bb") < mean(background, "delta_r_bb") - 0.3
    assert window_share(signal) > window_share(background)


def test_feature_distributions_per_process(events):
    table = frame(feature_distribution_rows(events, {"ETMiss": bin_edges([0, 600, 40]),
                                                     "pTl1": bin_edges([0, 400, 40])}))
    assert set(table.cls) == {"signal", "ttbar", "singletop"}
    for _, group in table.groupby(["variable", "cls"]):
        assert total_area(group) == pytest.approx(1.0)
    met = table[table.variable == "ETMiss"]
    means = {c: np.average((g.bin_low + g.bin_high) / 2, weights=g["count"]) for c, g in met.groupby("cls")}
    assert means["signal"] > max(means["ttbar"], means["singletop"])  # extra missing energy from the DM
    with pytest.raises(KeyError, match="no column 'pT_lepton'"):
        feature_distribution_rows(events, {"pT_lepton": bin_edges([0, 1, 2])})


def test_figures_are_written(events, tmp_path):
    labels = events.label.to_numpy()
    scores = np.clip(labels * 0.7 + np.random.default_rng(0).uniform(0, 0.3, len(labels)), 0, 1)
    score_figure(frame(score_histogram_rows(scores, labels)),
                 frame(score_band_rows(b_pair_kinematics(events), scores, labels, EDGES)), tmp_path)
    feature_figure(frame(feature_distribution_rows(events, {"pTl1": bin_edges([0, 400, 20])})), tmp_path)
    assert {p.name for p in (tmp_path / "figures").iterdir()} == {
        "moegt_gcn_scores.png", "moegt_gcn_scores.pdf", "moegt_feature_distributions.png",
        "moegt_feature_distributions.pdf"}


def test_hiding_zeroes_exactly_the_named_entries_in_every_split():
    datamodule = EventGraphDataModule(SyntheticRelease({"signal": 30, "ttbar": 15, "singletop": 15}, seed=1),
                                      batch_size=16)
    hidden = with_hidden_features(datamodule, ["pTb1", "ETMiss"])
    assert hidden_positions(["pTb1", "ETMiss", "metsig_New"]) == [(3, 0), (6, 0), (6, 5)]
    for split in ("train", "val", "test"):
        for before, after in zip(datamodule.splits[split], hidden.splits[split]):
            changed = before.x != after.x
            assert after.x[after.slot == 3, 0].eq(0).all() and after.x[after.slot == 6, 0].eq(0).all()
            assert changed[:, 1:].sum() == 0  # flags and other features untouched
            assert changed[(before.slot != 3) & (before.slot != 6)].sum() == 0  # other nodes untouched
            assert before.x[before.slot == 3, 0].ne(0).all()  # the original keeps its values
            assert after.num_nodes == before.num_nodes
    batch = next(iter(hidden.test_dataloader()))
    assert torch.equal(batch.x[batch.slot == 6, 0], torch.zeros(int((batch.slot == 6).sum())))
    with pytest.raises(ConfigError, match="cannot hide 'pT_b1'.*pTb1"):
        hidden_positions(["pT_b1"])


def test_dm_groups_select_their_mass_points_and_balance(events):
    group = dm_group_events(events, 100.0, 150.0, balance=True, seed=0)
    signal = group[group.label == 1]
    assert set(signal.dm) == {150.0} and len(signal) == (events.dm == 150.0).sum()
    assert (group.label == 0).sum() == len(signal)
    above = dm_group_events(events, 500.0, None, balance=False)
    assert set(above[above.label == 1].dm) == {700.0} and (above.label == 0).sum() == (events.label == 0).sum()
    with pytest.raises(ConfigError, match="no signal event has 800.0 < dm"):
        dm_group_events(events, 800.0, None)
    with pytest.raises(ConfigError, match="no `dm` column"):
        dm_group_events(events.drop(columns="dm"), 100.0, 150.0)


def test_larger_dm_boosts_the_higgs_and_brings_the_b_jets_closer(events):
    # Delta R_bb ~ 2 m_H / pT_H and pT_H grows with Delta m in the generator
    signal_means = []
    for low, high in ((100.0, 150.0), (150.0, 200.0), (500.0, None)):
        group = dm_group_events(events, low, high)
        signal_means.append(b_pair_kinematics(group[group.label == 1]).delta_r_bb.mean())
    assert signal_means[0] > signal_means[1] > signal_means[2]


def test_a_group_feeds_the_datamodule():
    events = SyntheticRelease({"signal": 60, "ttbar": 30, "singletop": 30}, seed=2).load()
    table = dm_group_events(events, 150.0, 200.0)
    datamodule = EventGraphDataModule(FrameSource(table), batch_size=8)
    datamodule.setup()
    assert sum(len(s) for s in datamodule.splits.values()) == len(table)

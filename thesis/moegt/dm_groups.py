"""Delta m groups of the Section 5.2 analysis (thesis S4): the signal is split by the mass difference
Delta m = m_parent - m_DM of its model and a classifier is trained and tested on one group at a time.

Thesis groups: Delta m = 150 GeV (group 1), 200 GeV (group 2), > 500 GeV (group 3). A group is the
half-open interval (low, high] of Delta m (high = null: no upper bound), so the thesis's groups are
(100, 150], (150, 200] and (500, inf) on the synthetic mass points {150, 200, 300, 500, 700}; the
last holds only Delta m = 700 there. Each group's table is the group's signal events and the
background events; with `balance` the background is subsampled (seeded) to the signal count, as the
thesis balances its benchmark.

Delta m is read from the event table's `dm` column: the synthetic generator writes it (its Higgs pT
and missing energy grow with Delta m, so larger Delta m gives boosted, closer b-jets, as in the
thesis's argument); the release's files as read by `OpenDataRelease` do not carry it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from thesis.core.errors import ConfigError


class FrameSource:
    """An event source over an already loaded table (`EventGraphDataModule(source=...)`)."""

    def __init__(self, events: pd.DataFrame):
        self.events = events

    def load(self) -> pd.DataFrame:
        return self.events


def dm_group_events(events: pd.DataFrame, low: float, high: float | None, balance: bool = True,
                    seed: int = 0) -> pd.DataFrame:
    """Signal events with low < dm <= high plus the background (subsampled to the same count with
    `balance`), in their original order."""
    if "dm" not in events.columns:
        raise ConfigError("the event table has no `dm` column (signal mass splitting): the release's files do not "
                          "store it; use the synthetic source (data=moegt_synth) or add a dm column to the signal "
                          "table")
    signal = events.label.to_numpy() == 1
    dm = events.dm.to_numpy(dtype=float)
    in_group = signal & (dm > low) & (dm <= (np.inf if high is None else high))
    background = np.flatnonzero(~signal)
    if not in_group.any():
        raise ConfigError(f"no signal event has {low} < dm <= {high}; the table's dm values are "
                          f"{sorted(set(dm[signal]))}")
    if balance and in_group.sum() < len(background):
        background = np.random.default_rng(seed).choice(background, size=int(in_group.sum()), replace=False)
    keep = np.sort(np.concatenate([np.flatnonzero(in_group), background]))
    return events.iloc[keep].reset_index(drop=True)

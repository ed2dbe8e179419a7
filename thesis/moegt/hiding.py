"""Feature hiding of the Section 5.2 GCN analysis (thesis S4): retrain with chosen input features
removed and compare the test AUC with the model that saw everything.

A hidden feature is a raw column of the release (e.g. `pTb1`), i.e. one (node slot, feature) entry
of the 7 x 6 event matrix (`graphs.NODE_COLUMNS`). Node features share their columns across node
types (column F1 holds the pT of jets, the lepton's pT and E_T^miss), so a column cannot be dropped
for one node alone: the entry is set to 0 after standardisation, i.e. to the training mean of its
column, in every split, so it carries no information about the event; the other nodes' values and
the missing-value flags are unchanged. Hiding happens after the graphs are built, so hiding a pT
never removes a node (nodes with pT <= 0 are dropped when the graph is built).

In 6-node events j1, j2 carry the same kinematics as b1, b2, so hiding `pTb1`, `pTb2` leaves those
values visible on the jet nodes, as the thesis's wording (hide the pT of b1, b2) implies.
"""

from __future__ import annotations

import copy

from torch_geometric.data import Data

from thesis.core.errors import ConfigError
from thesis.moegt.graphs import NODE_COLUMNS, NODE_NAMES

COLUMN_POSITIONS = {column: (NODE_NAMES.index(node), feature) for node, columns in NODE_COLUMNS.items()
                    for feature, column in enumerate(columns) if column is not None}


def hidden_positions(columns: list[str]) -> list[tuple[int, int]]:
    """(node slot, raw feature index) of each named release column."""
    unknown = [c for c in columns if c not in COLUMN_POSITIONS]
    if unknown:
        raise ConfigError(f"cannot hide {unknown[0]!r}: not a release column; use one of "
                          f"{', '.join(COLUMN_POSITIONS)}")
    return [COLUMN_POSITIONS[c] for c in columns]


def hide(graph: Data, positions: list[tuple[int, int]], nan_flags: bool) -> Data:
    """A copy of `graph` whose listed (slot, feature) entries are 0 (with flags, feature f sits in
    column 2f, its flag in 2f + 1)."""
    hidden = copy.copy(graph)
    hidden.x = graph.x.clone()
    for slot, feature in positions:
        hidden.x[graph.slot == slot, 2 * feature if nan_flags else feature] = 0.0
    return hidden


def with_hidden_features(datamodule, columns: list[str]):
    """A copy of a set-up `EventGraphDataModule` whose train, validation and test graphs have
    `columns` hidden; the original keeps its graphs."""
    positions = hidden_positions(list(columns))
    datamodule.setup()
    hidden = copy.copy(datamodule)
    hidden.splits = {split: [hide(g, positions, datamodule.nan_flags) for g in graphs]
                     for split, graphs in datamodule.splits.items()}
    return hidden


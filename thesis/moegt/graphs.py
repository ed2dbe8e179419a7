"""One collision event as a fully connected graph (thesis Sec. 5.2.2, Table 5.3).

An event is 42 raw values: 7 node slots (j1, j2, j3, b1, b2, lepton, missing energy) of 6 feature
slots each, NaN where Table 5.3 leaves a feature undefined. Each step of the preprocessing is its
own function so that it can be tested and switched off from config:

1. `node_matrix`: 42 values -> (7, 6), dropping nodes with pT <= 0 (a missing j3 is stored as -99);
2. `complete_edges`: every ordered pair i != j (30 edges for 6 nodes, 42 for 7);
3. `with_nan_flags`: each feature followed by an is-missing flag, missing values set to 0 (12 columns);
   without flags, missing values are set to 0 and the 6 columns are kept;
4. standardisation with dataset statistics (`thesis.moegt.data.Standardiser`, fitted on the
   training split);
5. `laplacian_pe`: the first k non-trivial eigenvectors of the symmetric normalised Laplacian.

Sign convention of the positional encoding (deterministic, unlike torch-geometric's
`AddLaplacianEigenvectorPE`, which draws a random sign per eigenvector on every call): each
eigenvector is flipped so that its entry of largest magnitude is positive; among entries whose
magnitudes tie (within 1e-6) the first node in slot order decides. On the complete graph K_N the
non-trivial eigenvalue N/(N-1) has multiplicity N-1, so the basis is arbitrary but fixed for a
given N: the encoding acts as a per-position code, not as structural information (see README).
"""

from __future__ import annotations

import numpy as np
import torch
from torch_geometric.data import Data

#: node slots in raw order; a slot's index is its position in the 7 x 6 matrix
NODE_NAMES = ("j1", "j2", "j3", "b1", "b2", "lepton", "energy")
#: node-type ids of the authors' plots (j3 = 0), used in routing counts and attention tables
NODE_TYPE_IDS = {"j1": 1, "j2": 2, "j3": 0, "b1": 3, "b2": 4, "lepton": 5, "energy": 6}
#: raw column of each (node, feature) slot in the release's files; None = undefined (Table 5.3)
NODE_COLUMNS = {
    "j1": ("pTj1", "etaj1", "phij1", "j1_quantile", None, None),
    "j2": ("pTj2", "etaj2", "phij2", "j2_quantile", None, None),
    "j3": ("pTj3", "etaj3", "phij3", "j3_quantile", None, None),
    "b1": ("pTb1", "etab1", "phib1", "b1_quantile", "b1m", None),
    "b2": ("pTb2", "etab2", "phib2", "b2_quantile", "b2m", None),
    "lepton": ("pTl1", "etal1", "phil1", None, None, None),
    "energy": ("ETMiss", None, "ETMissPhi", None, None, "metsig_New"),
}
RAW_COLUMNS = tuple(c for name in NODE_NAMES for c in NODE_COLUMNS[name] if c is not None)
NUM_SLOTS, NUM_RAW_FEATURES = 7, 6


def raw_slots(frame) -> np.ndarray:
    """(events, 42) float array from a table holding RAW_COLUMNS; undefined slots are NaN."""
    out = np.full((len(frame), NUM_SLOTS * NUM_RAW_FEATURES), np.nan)
    for node, name in enumerate(NODE_NAMES):
        for feature, column in enumerate(NODE_COLUMNS[name]):
            if column is not None:
                out[:, node * NUM_RAW_FEATURES + feature] = frame[column].to_numpy(dtype=float)
    return out


def node_matrix(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Step 1: the present nodes' (N, 6) features and their slot indices (N = 6 or 7)."""
    matrix = np.asarray(values, dtype=float).reshape(NUM_SLOTS, NUM_RAW_FEATURES)
    present = matrix[:, 0] > 0
    return matrix[present], np.flatnonzero(present)


def complete_edges(num_nodes: int) -> torch.Tensor:
    """Step 2: (2, N(N-1)) edge index of all ordered pairs i != j, no self loops."""
    src, dst = torch.meshgrid(torch.arange(num_nodes), torch.arange(num_nodes), indexing="ij")
    off_diagonal = src != dst
    return torch.stack([src[off_diagonal], dst[off_diagonal]])


def with_nan_flags(features: np.ndarray, flags: bool = True) -> np.ndarray:
    """Step 3: missing values -> 0, each feature followed by its is-missing flag when `flags`.

    With flags the columns are (f1, nan1, f2, nan2, ..., f6, nan6): 12 per node.
    """
    missing = np.isnan(features)
    filled = np.where(missing, 0.0, features)
    if not flags:
        return filled
    return np.stack([filled, missing.astype(float)], axis=-1).reshape(len(features), -1)


def laplacian_pe(num_nodes: int, edge_index: torch.Tensor, k: int) -> torch.Tensor:
    """Step 5: (N, k) eigenvectors 2..k+1 of I - D^-1/2 A D^-1/2, in the sign convention above.

    Columns past the N-1 non-trivial eigenvectors are zero.
    """
    adjacency = np.zeros((num_nodes, num_nodes))
    adjacency[edge_index[0].numpy(), edge_index[1].numpy()] = 1.0
    degree = adjacency.sum(1)
    scale = np.where(degree > 0, degree, 1.0) ** -0.5
    laplacian = np.eye(num_nodes) - scale[:, None] * adjacency * scale[None, :]
    _, vectors = np.linalg.eigh(laplacian)
    vectors = vectors[:, 1 : k + 1]
    magnitude = np.abs(vectors)
    leader = np.argmax(magnitude >= magnitude.max(0, keepdims=True) - 1e-6, axis=0)
    vectors = vectors * np.sign(vectors[leader, np.arange(vectors.shape[1])])
    pe = np.zeros((num_nodes, k))
    pe[:, : vectors.shape[1]] = vectors
    return torch.tensor(pe, dtype=torch.float32)


def event_graph(values: np.ndarray, label: int, nan_flags: bool = True, pe_k: int = 4,
                keep_slots: tuple[int, ...] | None = None) -> Data:
    """An event's 42 raw values -> `Data` with x (N, 12 or 6), edge_index, pe (N, pe_k), y,
    node_type (the plotting ids) and slot (0..6, position in NODE_NAMES).

    `keep_slots` restricts the graph to those node slots (the truncated "jets only" graphs).
    """
    features, slots = node_matrix(values)
    if keep_slots is not None:
        kept = np.isin(slots, keep_slots)
        features, slots = features[kept], slots[kept]
    edge_index = complete_edges(len(slots))
    names = [NODE_NAMES[s] for s in slots]
    data = Data(x=torch.tensor(with_nan_flags(features, nan_flags), dtype=torch.float32), edge_index=edge_index,
                y=torch.tensor([label]), slot=torch.tensor(slots),
                node_type=torch.tensor([NODE_TYPE_IDS[n] for n in names]))
    if pe_k > 0:
        data.pe = laplacian_pe(len(slots), edge_index, pe_k)
    return data

"""Graph construction of Table 5.3 on hand-made events."""

import numpy as np
import pytest
import torch

from thesis.moegt.graphs import complete_edges, event_graph, laplacian_pe, node_matrix, with_nan_flags

from .events import B1, ENERGY, LEPTON, SEVEN_NODE_EVENT, SIX_NODE_EVENT


def test_missing_j3_is_dropped_and_node_types_follow_the_slots():
    six, seven = event_graph(SIX_NODE_EVENT, 0), event_graph(SEVEN_NODE_EVENT, 1)
    assert six.slot.tolist() == [0, 1, 3, 4, 5, 6]
    assert six.node_type.tolist() == [1, 2, 3, 4, 5, 6]  # j1, j2, b1, b2, lepton, energy
    assert seven.node_type.tolist() == [1, 2, 0, 3, 4, 5, 6]
    assert six.y.item() == 0 and seven.y.item() == 1


@pytest.mark.parametrize("nodes, edges", [(6, 30), (7, 42)])
def test_edges_are_all_ordered_pairs_without_self_loops(nodes, edges):
    edge_index = complete_edges(nodes)
    pairs = set(map(tuple, edge_index.T.tolist()))
    assert edge_index.shape == (2, edges) and len(pairs) == edges
    assert all(i != j for i, j in pairs)


def test_features_interleave_values_and_missing_flags():
    graph = event_graph(SEVEN_NODE_EVENT, 1)
    assert graph.x.shape == (7, 12)
    b1, lepton, energy = graph.x[3], graph.x[5], graph.x[6]
    assert b1.tolist() == [120.0, 0, 0.5, 0, 1.0, 0, 5.0, 0, 14.0, 0, 0, 1]
    assert lepton[0::2].tolist() == pytest.approx([60.0, 0.1, 2.5, 0, 0, 0]) and lepton[1::2].tolist() == [0, 0, 0, 1, 1, 1]
    assert energy[0::2].tolist() == pytest.approx([150.0, 0, -1.2, 0, 0, 7.5])
    assert energy[1::2].tolist() == [0, 1, 0, 1, 1, 0]


def test_without_flags_missing_values_become_zero():
    features, _ = node_matrix(SEVEN_NODE_EVENT)
    plain = with_nan_flags(features, flags=False)
    assert plain.shape == (7, 6) and not np.isnan(plain).any()
    assert plain[3].tolist() == [v if v == v else 0.0 for v in B1]
    assert event_graph(SEVEN_NODE_EVENT, 1, nan_flags=False, pe_k=0).x.shape == (7, 6)


def test_laplacian_pe_sign_convention_is_deterministic():
    for nodes in (5, 6, 7):
        edges = complete_edges(nodes)
        pe = laplacian_pe(nodes, edges, 4)
        assert torch.equal(pe, laplacian_pe(nodes, edges, 4))
        leader = pe.abs().argmax(0)
        assert (pe[leader, torch.arange(4)] > 0).all()
        laplacian = torch.eye(nodes) - (torch.ones(nodes, nodes) - torch.eye(nodes)) / (nodes - 1)
        assert torch.allclose(laplacian @ pe, pe * nodes / (nodes - 1), atol=1e-5)  # eigenvalue N/(N-1)


def test_pe_columns_beyond_the_nontrivial_eigenvectors_are_zero():
    pe = laplacian_pe(3, complete_edges(3), 4)
    assert pe[:, 2:].abs().max() == 0 and pe[:, :2].abs().max() > 0


def test_truncation_keeps_only_jets_and_b_jets():
    graph = event_graph(SIX_NODE_EVENT, 0, keep_slots=(0, 1, 2, 3, 4))
    assert graph.node_type.tolist() == [1, 2, 3, 4] and graph.edge_index.shape == (2, 12)
    assert LEPTON[0] not in graph.x[:, 0].tolist() and ENERGY[0] not in graph.x[:, 0].tolist()

"""Permutation behaviour of the classifiers. Without positional encodings, permuting an event's
nodes permutes node-level outputs (embeddings, routing, attention rows and columns) and leaves
the graph prediction unchanged. With the Laplacian PE this does not hold: on a complete graph the
eigenvectors are a fixed code per position in the node list, not per node."""

import torch
from torch_geometric.data import Batch

from thesis.moegt.graphs import event_graph
from thesis.moegt.model import GCN, FlatMLP, GraphTransformer

from .events import SEVEN_NODE_EVENT, SIX_NODE_EVENT


def permuted(graph, order):
    """The same event with its nodes listed in `order` (edges relabelled)."""
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(len(order))
    clone = graph.clone()
    for key in ("x", "slot", "node_type"):
        clone[key] = graph[key][order]
    clone.edge_index = inverse[graph.edge_index]
    return clone


def batches():
    graphs = [event_graph(SEVEN_NODE_EVENT, 1, pe_k=0), event_graph(SIX_NODE_EVENT, 0, pe_k=0)]
    order = torch.tensor([4, 0, 6, 2, 5, 1, 3])
    return Batch.from_data_list(graphs), Batch.from_data_list([permuted(graphs[0], order), graphs[1]]), order


def test_graph_transformer_is_permutation_equivariant_without_pe():
    torch.manual_seed(0)
    model = GraphTransformer(in_dim=12, hidden=16, heads=2, layers=2, pe_k=0, num_experts=4, expert_hidden=8,
                             k=2).eval()
    nodes = []
    model.head_inner.register_forward_hook(lambda module, args, out: nodes.append(args[0]))
    batch, shuffled, order = batches()
    out, out_shuffled = model(batch), model(shuffled)
    assert torch.allclose(out.logits, out_shuffled.logits, atol=1e-5)
    first = slice(0, 7)
    assert torch.allclose(nodes[0][first][order], nodes[1][first], atol=1e-5)
    for routing, routing_shuffled in zip(out.routing, out_shuffled.routing):
        assert torch.equal(routing.experts[first][order], routing_shuffled.experts[first])
    for maps, maps_shuffled in zip(out.attention, out_shuffled.attention):
        assert torch.allclose(maps[0][:, order][:, :, order], maps_shuffled[0], atol=1e-6)


def test_gcn_and_mlp_predictions_ignore_node_order():
    torch.manual_seed(0)
    batch, shuffled, _ = batches()
    for model in (GCN(12, (8, 4)), FlatMLP(12, (8, 4))):
        assert torch.allclose(model(batch).logits, model(shuffled).logits, atol=1e-5)


def test_attention_rows_are_distributions_over_each_graphs_nodes():
    torch.manual_seed(0)
    model = GraphTransformer(in_dim=12, hidden=16, heads=2, layers=1, pe_k=4, num_experts=0, ffn_hidden=8).eval()
    graphs = [event_graph(SEVEN_NODE_EVENT, 1), event_graph(SIX_NODE_EVENT, 0)]
    maps = model(Batch.from_data_list(graphs)).attention[0]
    assert maps.shape == (2, 2, 7, 7)
    assert torch.allclose(maps[0].sum(-1), torch.ones(2, 7))
    assert torch.allclose(maps[1, :, :6].sum(-1), torch.ones(2, 6))
    assert maps[1, :, :, 6].abs().max() == 0  # the padding slot of the 6-node graph gets no attention

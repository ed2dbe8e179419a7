"""The four graph classifiers of Table 5.7: the MoE Graph Transformer (MGT), the plain Graph
Transformer (GT), a GCN and an MLP on the flattened event. Each maps a torch-geometric batch to
`GraphOutput`; the transformer also returns its attention maps and the MoE routing per layer.

Transformer layer (post-norm): x <- LN(x + MHA(x)); x <- Dropout(x); x <- LN(x + F(x)), where F is
the FFN of eq. 5.8 (GT) or the MoE block (MGT). Attention (eqs. 5.6-5.7) is restricted to the
graph's edges, plus each node to itself when `attn_self_loops` (default; the authors' adjacency has
no self loops). Head: Linear -> ReLU -> mean over nodes -> Linear to 2 logits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import GCNConv, global_mean_pool
from torch_geometric.utils import to_dense_adj, to_dense_batch

from thesis.moegt.graphs import NUM_SLOTS
from thesis.moegt.moe import MoERouting, NoisyTopKMoE


@dataclass
class GraphOutput:
    """logits (graphs, 2); balance = mean over MoE layers of CV(Load)^2 (0 without MoE);
    attention: per layer (graphs, heads, N, N) softmax maps over the padded nodes;
    routing: per MoE layer, over the batch's nodes in batch order."""

    logits: Tensor
    balance: Tensor
    attention: list[Tensor] = field(default_factory=list)
    routing: list[MoERouting] = field(default_factory=list)


class EdgeAttention(nn.Module):
    """Multi-head attention (eq. 5.7) over a dense (graphs, N, dim) batch; `allowed` (graphs, N, N)
    says which key each query may attend to. Returns the output and the (graphs, heads, N, N) maps."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"hidden size {dim} is not divisible by the number of heads {heads}")
        self.heads, self.head_dim = heads, dim // heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: Tensor, allowed: Tensor) -> tuple[Tensor, Tensor]:
        b, n, _ = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim)
        scores = scores.masked_fill(~allowed[:, None], float("-inf"))
        weights = torch.nan_to_num(scores.softmax(-1))  # a padded query row attends to nothing
        return self.out((weights @ v).transpose(1, 2).reshape(b, n, -1)), weights


class FeedForward(nn.Module):
    """x -> W_2 ReLU(W_1 x + b_1) + b_2 (eq. 5.8)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.inner, self.outer = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.outer(F.relu(self.inner(x)))


class TransformerLayer(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float, mixer: nn.Module):
        super().__init__()
        self.attention = EdgeAttention(dim, heads)
        self.norm_attention, self.norm_mixer = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        self.mixer = mixer

    def forward(self, x: Tensor, allowed: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, MoERouting | None]:
        attended, weights = self.attention(x, allowed)
        x = self.dropout(self.norm_attention(x + attended))
        nodes = x[mask]
        if isinstance(self.mixer, NoisyTopKMoE):
            mixed, routing = self.mixer(nodes)
        else:
            mixed, routing = self.mixer(nodes), None
        x = x.clone()
        x[mask] = self.norm_mixer(nodes + mixed)
        return x, weights, routing


class GraphTransformer(nn.Module):
    """MGT when `num_experts` > 0 (MoE blocks of `num_experts` experts of width `expert_hidden`,
    top-`k`), GT otherwise (FFN of width `ffn_hidden`). Input: h0 = W_x x + W_pe pe (pe_k = 0: no PE)."""

    def __init__(self, in_dim: int = 12, hidden: int = 80, heads: int = 2, layers: int = 2, pe_k: int = 4,
                 num_experts: int = 6, expert_hidden: int = 20, k: int = 2, ffn_hidden: int = 160,
                 dropout: float = 0.0, head_hidden: int = 40, attn_self_loops: bool = True,
                 noise_mode: str = "per_node", noise_at_eval: bool = False, share_expert_weights: bool = False):
        super().__init__()
        self.attn_self_loops = attn_self_loops
        self.embed = nn.Linear(in_dim, hidden)
        self.embed_pe = nn.Linear(pe_k, hidden) if pe_k > 0 else None

        def mixer() -> nn.Module:
            if num_experts > 0:
                return NoisyTopKMoE(hidden, num_experts, expert_hidden, k, dropout, noise_mode, noise_at_eval,
                                    share_expert_weights)
            return FeedForward(hidden, ffn_hidden)

        self.layers = nn.ModuleList([TransformerLayer(hidden, heads, dropout, mixer()) for _ in range(layers)])
        self.head_inner, self.head_outer = nn.Linear(hidden, head_hidden), nn.Linear(head_hidden, 2)

    def forward(self, batch) -> GraphOutput:
        h = self.embed(batch.x)
        if self.embed_pe is not None:
            h = h + self.embed_pe(batch.pe)
        x, mask = to_dense_batch(h, batch.batch)
        allowed = to_dense_adj(batch.edge_index, batch.batch, max_num_nodes=x.shape[1]).bool()
        if self.attn_self_loops:
            allowed = allowed | torch.diag_embed(mask)
        attention, routing = [], []
        for layer in self.layers:
            x, weights, route = layer(x, allowed, mask)
            attention.append(weights)
            if route is not None:
                routing.append(route)
        nodes = F.relu(self.head_inner(x[mask]))
        logits = self.head_outer(global_mean_pool(nodes, batch.batch))
        balance = torch.stack([r.balance for r in routing]).mean() if routing else logits.new_zeros(())
        return GraphOutput(logits=logits, balance=balance, attention=attention, routing=routing)


class GCN(nn.Module):
    """Two GCNConv layers (80, 40; self loops added), ReLU, mean over nodes, Linear to 2 (Table 5.7)."""

    def __init__(self, in_dim: int = 12, hidden: tuple[int, int] = (80, 40)):
        super().__init__()
        self.conv1, self.conv2 = GCNConv(in_dim, hidden[0]), GCNConv(hidden[0], hidden[1])
        self.classify = nn.Linear(hidden[1], 2)

    def forward(self, batch) -> GraphOutput:
        h = F.relu(self.conv1(batch.x, batch.edge_index))
        h = F.relu(self.conv2(h, batch.edge_index))
        logits = self.classify(global_mean_pool(h, batch.batch))
        return GraphOutput(logits=logits, balance=logits.new_zeros(()))


class FlatMLP(nn.Module):
    """MLP (80, 40) on the event flattened into its 7 node slots (absent slots zero) plus one
    j3-present flag (Table 5.7; the flattening is our choice, the thesis gives only the sizes)."""

    def __init__(self, in_dim: int = 12, hidden: tuple[int, int] = (80, 40)):
        super().__init__()
        self.in_dim = in_dim
        self.net = nn.Sequential(nn.Linear(NUM_SLOTS * in_dim + 1, hidden[0]), nn.ReLU(),
                                 nn.Linear(hidden[0], hidden[1]), nn.ReLU(), nn.Linear(hidden[1], 2))

    def forward(self, batch) -> GraphOutput:
        graphs = int(batch.num_graphs)
        flat = batch.x.new_zeros(graphs, NUM_SLOTS, self.in_dim)
        flat[batch.batch, batch.slot] = batch.x
        present = flat.new_zeros(graphs, NUM_SLOTS)
        present[batch.batch, batch.slot] = 1.0
        logits = self.net(torch.cat([flat.flatten(1), present[:, 2:3]], dim=1))
        return GraphOutput(logits=logits, balance=logits.new_zeros(()))

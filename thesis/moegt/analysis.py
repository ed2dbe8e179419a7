"""Interpretability tables of a trained classifier on the test split (thesis Sec. 5.2.4):
routing counts node type x expert per MoE layer (Fig. 5.27) and mean attention maps per layer and
head for 6- and 7-node graphs over the subsets test / true positives / true negatives
(Figs. 5.24-5.26; the 85th-percentile display filter is left to the figure recipe)."""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from torch_geometric.utils import to_dense_batch

from thesis.moegt.graphs import NODE_NAMES, NODE_TYPE_IDS
from thesis.moegt.metrics import expert_load_cv, group_purity, normalised_mutual_information, routing_counts

if TYPE_CHECKING:
    import pandas as pd

TYPE_NAMES = {v: k for k, v in NODE_TYPE_IDS.items()}


@torch.no_grad()
def inspect(model: nn.Module, loader: DataLoader) -> dict[str, object]:
    """Scores, labels, per-MoE-layer (node types, top-k experts) and attention sums keyed by
    (subset, graph size, layer, head) over slot-indexed N x N maps."""
    model.eval()
    scores, labels, routed = [], [], defaultdict(lambda: ([], []))
    sums: dict[tuple, np.ndarray] = defaultdict(lambda: np.zeros((len(NODE_NAMES), len(NODE_NAMES))))
    counts: dict[tuple, int] = defaultdict(int)
    for batch in loader:
        out = model(batch)
        prob = out.logits.softmax(-1)[:, 1]
        scores.append(prob.numpy())
        labels.append(batch.y.numpy())
        for layer, routing in enumerate(out.routing):
            routed[layer][0].append(batch.node_type.numpy())
            routed[layer][1].append(routing.experts.numpy())
        slots, mask = to_dense_batch(batch.slot, batch.batch, fill_value=-1)
        predicted = (prob >= 0.5).numpy()
        truth = batch.y.numpy().astype(bool)
        subsets = {"test": np.ones_like(truth), "tp": predicted & truth, "tn": ~predicted & ~truth}
        for g in range(int(batch.num_graphs)):
            n = int(mask[g].sum())
            index = np.ix_(slots[g, :n].numpy(), slots[g, :n].numpy())
            for layer, maps in enumerate(out.attention):
                for head in range(maps.shape[1]):
                    for subset, chosen in subsets.items():
                        if chosen[g]:
                            sums[(subset, n, layer, head)][index] += maps[g, head, :n, :n].numpy()
                            counts[(subset, n, layer, head)] += 1
    return {"scores": np.concatenate(scores), "labels": np.concatenate(labels),
            "routing": {layer: (np.concatenate(t), np.concatenate(e)) for layer, (t, e) in routed.items()},
            "attention": {key: sums[key] / counts[key] for key in sums}}


def routing_rows(routing: dict[int, tuple[np.ndarray, np.ndarray]], num_experts: int) -> list[dict[str, object]]:
    rows = []
    for layer, (types, experts) in routing.items():
        counts = routing_counts(types, experts, num_experts)
        rows += [{"layer": layer + 1, "node": TYPE_NAMES[t], "expert": e + 1, "count": int(counts[t, e])}
                 for t in range(counts.shape[0]) for e in range(num_experts)]
    return rows


def specialisation(routing: dict[int, tuple[np.ndarray, np.ndarray]], num_experts: int) -> dict[str, float]:
    """Per MoE layer: NMI(node type; expert), group purity of the node types' top-k experts and the
    coefficient of variation of the experts' load (spec A.8 item 2)."""
    scores = {}
    for layer, (types, experts) in routing.items():
        counts = routing_counts(types, experts, num_experts)
        scores[f"layer{layer + 1}/nmi"] = normalised_mutual_information(counts)
        scores[f"layer{layer + 1}/purity"] = group_purity(counts, experts.shape[1])
        scores[f"layer{layer + 1}/load_cv"] = expert_load_cv(counts)
    return scores


def attention_rows(attention: dict[tuple, np.ndarray]) -> list[dict[str, object]]:
    rows = []
    for (subset, n, layer, head), matrix in sorted(attention.items()):
        present = np.flatnonzero(matrix.sum(1) > 0)  # a present node's attention row sums to 1
        rows += [{"subset": subset, "nodes": n, "layer": layer + 1, "head": head + 1, "query": NODE_NAMES[q],
                  "key": NODE_NAMES[k], "weight": float(matrix[q, k])} for q in present for k in present]
    return rows


def attention_summary(table: pd.DataFrame, keys: tuple[str, ...] = ("b1", "b2", "energy")) -> pd.DataFrame:
    """Per subset of an attention table (`attention_rows` columns, any number of runs): the mean
    attention mass a query gives to `keys` and the mean entropy (nats) of a query's attention row,
    averaged over queries, layers, heads, graph sizes and runs (spec A.8 item 4: TP vs TN).
    Rows are read from maps already averaged over events, so the entropy is that of mean maps."""
    import pandas as pd

    group = ["run", "subset", "nodes", "layer", "head", "query"] if "run" in table else \
        ["subset", "nodes", "layer", "head", "query"]
    weights = table.assign(on_keys=table.weight.where(table.key.isin(keys), 0.0),
                           plogp=-table.weight * np.log(table.weight.clip(lower=1e-12)))
    per_query = weights.groupby(group)[["on_keys", "plogp"]].sum().reset_index()
    summary = per_query.groupby("subset")[["on_keys", "plogp"]].mean()
    return pd.DataFrame({"subset": summary.index, "mass_on_keys": summary.on_keys.values,
                         "row_entropy": summary.plogp.values})

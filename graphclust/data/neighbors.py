"""Graph-aware datasets: node-plus-neighbour tuples as indices, collated into subgraph batches.

A dataset item never copies feature rows: it is the node id, its neighbour ids
and the edge weights. :class:`SubgraphCollate` gathers the features of the union
of nodes once per batch and relabels the edges to local positions, giving a batch
that a PyG ``MessagePassing`` layer consumes directly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset

from graphclust.graph.graph import KNNGraph
from graphclust.utils import GraphclustError, check_random_state, seed_from

__all__ = ["NeighborDataset", "NodeNeighbors", "SubgraphBatch", "SubgraphCollate"]


class NodeNeighbors(NamedTuple):
    """One dataset item.

    Attributes
    ----------
    node : int
        The anchor's row in the data.
    neighbors : LongTensor of shape (J,)
        Neighbour rows.
    weights : FloatTensor of shape (J,)
        Edge weights ``w_ij`` (for sampled neighbours: the importance weight, so that
        ``sum_j weights_j * f(j)`` is unbiased for the full weighted sum).
    """

    node: int
    neighbors: torch.Tensor
    weights: torch.Tensor


class SubgraphBatch(NamedTuple):
    """A batch as a small graph over the union of anchors and their neighbours.

    Attributes
    ----------
    node_ids : LongTensor of shape (n_sub,)
        Global row ids of the batch's nodes; anchors come first.
    x : FloatTensor of shape (n_sub, n_features)
        Features of those nodes (gathered once per batch).
    edge_index : LongTensor of shape (2, E)
        Local edges ``neighbour -> anchor`` (row 0 source, row 1 target).
    edge_weight : FloatTensor of shape (E,)
    n_anchors : int
        The first ``n_anchors`` nodes are the anchors.
    """

    node_ids: torch.Tensor
    x: torch.Tensor
    edge_index: torch.Tensor
    edge_weight: torch.Tensor
    n_anchors: int

    def to(self, device: torch.device | str) -> SubgraphBatch:
        return SubgraphBatch(
            self.node_ids.to(device),
            self.x.to(device),
            self.edge_index.to(device),
            self.edge_weight.to(device),
            self.n_anchors,
        )


class NeighborDataset(Dataset):
    """Yields :class:`NodeNeighbors` for every node of a :class:`KNNGraph`.

    Parameters
    ----------
    graph : KNNGraph
    n_neighbors : int, optional
        Use only the first ``n_neighbors`` of each list (default: all ``graph.k``).
    sample : int, optional
        Draw this many neighbours per item with probability proportional to
        ``w_ij`` (with replacement); their weights become ``sum_j w_ij / sample``
        each, so the weighted sum over the sample is an unbiased estimate of the
        full one. ``None`` returns all neighbours with their weights.
    random_state : int or numpy Generator, optional
        Local randomness for sampling.
    """

    def __init__(
        self,
        graph: KNNGraph,
        n_neighbors: int | None = None,
        sample: int | None = None,
        random_state: int | np.random.Generator | None = None,
    ) -> None:
        k = graph.k if n_neighbors is None else int(n_neighbors)
        if not 1 <= k <= graph.k:
            raise GraphclustError(f"n_neighbors must lie in [1, {graph.k}], got {n_neighbors}")
        if sample is not None and int(sample) < 1:
            raise GraphclustError(f"sample must be >= 1 neighbours, got {sample}")
        self.graph = graph
        self.k = k
        self.sample = None if sample is None else int(sample)
        self._indices = torch.from_numpy(graph.indices[:, :k])
        self._weights = torch.from_numpy(graph.weights[:, :k])
        self._rng = check_random_state(random_state)
        self._gen = torch.Generator().manual_seed(seed_from(self._rng))

    def __len__(self) -> int:
        return self.graph.n_nodes

    def __getitem__(self, i: int) -> NodeNeighbors:
        i = int(i)
        nbrs, w = self._indices[i], self._weights[i]
        if self.sample is not None:
            total = w.sum()
            probs = w if total > 0 else torch.ones_like(w)
            pick = torch.multinomial(probs, self.sample, replacement=True, generator=self._gen)
            nbrs = nbrs[pick]
            w = torch.full((self.sample,), float(total) / self.sample, dtype=torch.float32)
        return NodeNeighbors(i, nbrs, w)


class SubgraphCollate:
    """Collate :class:`NodeNeighbors` items into one :class:`SubgraphBatch`.

    Parameters
    ----------
    X : Tensor or ndarray of shape (n_samples, n_features)
        The full feature matrix (kept by reference; rows are gathered per batch).
    """

    def __init__(self, X: torch.Tensor | np.ndarray) -> None:
        self.X = torch.as_tensor(X)

    def __call__(self, items: Sequence[NodeNeighbors]) -> SubgraphBatch:
        if len(items) == 0:
            raise GraphclustError("cannot collate an empty batch")
        anchors = torch.tensor([it.node for it in items], dtype=torch.long)
        counts = torch.tensor([it.neighbors.numel() for it in items], dtype=torch.long)
        nbrs = torch.cat([it.neighbors for it in items]) if counts.sum() > 0 else anchors[:0]
        w = torch.cat([it.weights for it in items]) if counts.sum() > 0 else torch.zeros(0)
        # union of nodes, anchors first, each once
        extra = nbrs[~torch.isin(nbrs, anchors)]
        extra = torch.unique(extra)  # sorted: deterministic
        node_ids = torch.cat([anchors, extra])
        if torch.unique(anchors).numel() != anchors.numel():
            raise GraphclustError("a batch holds the same anchor twice")
        # global -> local map via sorting (no n_samples-sized buffer)
        sorted_ids, perm = torch.sort(node_ids)
        local_src = perm[torch.searchsorted(sorted_ids, nbrs)]
        local_dst = torch.repeat_interleave(torch.arange(len(items)), counts)
        return SubgraphBatch(
            node_ids=node_ids,
            x=self.X[node_ids],
            edge_index=torch.stack([local_src, local_dst]),
            edge_weight=w.to(torch.float32),
            n_anchors=len(items),
        )

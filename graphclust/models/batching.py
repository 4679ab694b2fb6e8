"""Vectorised subgraph batches for training: full neighbour lists or weighted edge sampling.

:class:`NeighborBatches` yields the same :class:`~graphclust.data.neighbors.SubgraphBatch`
as ``DataLoader(NeighborDataset(graph, sample=...), collate_fn=SubgraphCollate(X))`` (anchors
first, the other nodes once each in sorted order, edges ``neighbour -> anchor`` with local
ids, importance weights ``sum_j w_ij / sample`` for sampled neighbours), but draws a whole
batch with a few tensor ops instead of one Python call per node; the dataset + collate pair
stays the reference it is tested against. With ``graph=None`` a batch is the anchors alone
with no edges (VaDE).

For data-parallel training, :meth:`NeighborBatches.shards` draws exactly the batches of
one process (same generator calls) and hands each rank a contiguous part of every batch's
anchors with their neighbours, plus where its nodes sit in the whole batch (so per-node
randomness can be drawn for the whole batch and indexed).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from graphclust.data.neighbors import SubgraphBatch
from graphclust.graph.graph import KNNGraph
from graphclust.utils import GraphclustError

__all__ = ["BatchShard", "NeighborBatches", "batch_node_ids", "subgraph_batch"]


def batch_node_ids(anchors: Tensor, neighbors: Tensor) -> Tensor:
    """Node ids of the batch of ``anchors`` and ``neighbors``: anchors first, then the other
    neighbours once each in sorted order (LongTensor of shape (n_nodes,))."""
    nbrs = neighbors.reshape(-1)
    extra = torch.unique(nbrs[~torch.isin(nbrs, anchors)])  # sorted, deterministic
    return torch.cat([anchors, extra])


class BatchShard(NamedTuple):
    """One rank's part of one batch (see :meth:`NeighborBatches.shards`).

    Attributes
    ----------
    batch : SubgraphBatch
        This rank's anchors (a contiguous slice of the batch's anchors) and their neighbours.
    global_rows : LongTensor of shape (batch.x.shape[0],)
        Position of each of ``batch.node_ids`` in the node list of the whole batch.
    n_global_nodes : int
        Nodes of the whole batch.
    n_global_anchors : int
        Anchors of the whole batch (the sum of every rank's ``batch.n_anchors``).
    """

    batch: SubgraphBatch
    global_rows: Tensor
    n_global_nodes: int
    n_global_anchors: int


def subgraph_batch(
    X: Tensor, anchors: Tensor, neighbors: Tensor, weights: Tensor
) -> SubgraphBatch:
    """Build one batch from anchors and a fixed number of neighbours per anchor.

    Parameters
    ----------
    X : Tensor of shape (n_samples, n_features)
        Full feature matrix (rows are gathered once per batch, on its device).
    anchors : LongTensor of shape (B,)
        Distinct anchor rows.
    neighbors : LongTensor of shape (B, J)
        Neighbour rows of each anchor (``J`` may be 0).
    weights : Tensor of shape (B, J)
        Edge weights.
    """
    B, J = neighbors.shape
    nbrs = neighbors.reshape(-1)
    node_ids = batch_node_ids(anchors, neighbors)
    sorted_ids, perm = torch.sort(node_ids)
    local_src = perm[torch.searchsorted(sorted_ids, nbrs)]
    local_dst = torch.arange(B).repeat_interleave(J)
    dev = X.device
    return SubgraphBatch(
        node_ids=node_ids.to(dev),
        x=X[node_ids.to(dev)],
        edge_index=torch.stack([local_src, local_dst]).to(dev),
        edge_weight=weights.reshape(-1).to(device=dev, dtype=torch.float32),
        n_anchors=B,
    )


class NeighborBatches:
    """Shuffled anchor batches over a kNN graph, as :class:`SubgraphBatch`.

    Parameters
    ----------
    X : Tensor of shape (n_samples, n_features)
    graph : KNNGraph or None
        ``None``: anchors only, no edges.
    batch_size : int
        Anchors per batch.
    sample : int, optional
        Neighbours drawn per anchor with probability ``w_ij`` (with replacement), each with
        weight ``sum_j w_ij / sample``; ``None`` keeps every neighbour with its weight.
    n_neighbors : int, optional
        Use only each node's first ``n_neighbors`` neighbours (default: all).
    generator : torch.Generator, optional
        CPU generator for the shuffle and the sampling; its state is the whole state of
        this iterator (save it to resume).
    shuffle : bool
    """

    def __init__(
        self,
        X: Tensor,
        graph: KNNGraph | None,
        batch_size: int,
        sample: int | None = None,
        n_neighbors: int | None = None,
        generator: torch.Generator | None = None,
        shuffle: bool = True,
    ) -> None:
        if int(batch_size) < 1:
            raise GraphclustError(f"batch_size must be >= 1, got {batch_size}")
        if sample is not None and int(sample) < 1:
            raise GraphclustError(f"sample must be >= 1 neighbours (or None for all), got {sample}")
        self.X = X
        self.n = int(X.shape[0])
        self.batch_size = int(batch_size)
        self.sample = None if sample is None else int(sample)
        self.generator = generator
        self.shuffle = shuffle
        if graph is None:
            self.indices = self.weights = None
        else:
            if graph.n_nodes != self.n:
                raise GraphclustError(
                    f"the graph has {graph.n_nodes} nodes but X has {self.n} rows"
                )
            k = graph.k if n_neighbors is None else int(n_neighbors)
            if not 1 <= k <= graph.k:
                raise GraphclustError(f"n_neighbors must lie in [1, {graph.k}], got {n_neighbors}")
            self.indices = torch.from_numpy(np.ascontiguousarray(graph.indices[:, :k]))
            self.weights = torch.from_numpy(np.ascontiguousarray(graph.weights[:, :k]))

    def __len__(self) -> int:
        return math.ceil(self.n / self.batch_size)

    def _order(self) -> Tensor:
        if self.shuffle:
            return torch.randperm(self.n, generator=self.generator)
        return torch.arange(self.n)

    def __iter__(self) -> Iterator[SubgraphBatch]:
        for anchors in self._order().split(self.batch_size):
            yield self.batch(anchors)

    def shards(self, rank: int, world_size: int) -> Iterator[BatchShard]:
        """This rank's part of every batch of one epoch.

        Every rank must call this with the same generator state: the shuffle and the
        neighbour sampling are drawn for the whole batch exactly as :meth:`__iter__` draws
        them (so the generator advances identically on every rank and in a one-process
        run), then rank ``r`` keeps anchors ``[B r / W, B (r+1) / W)`` of each batch of
        ``B`` anchors with their (sampled) neighbours. Neighbours are row indices into the
        full ``X`` every rank holds, so a shard's subgraph is complete; a neighbour shared by
        two shards is simply a node of both.

        Parameters
        ----------
        rank, world_size : int

        Yields
        ------
        BatchShard
        """
        if not 0 <= int(rank) < int(world_size):
            raise GraphclustError(f"rank must lie in [0, {world_size}), got {rank}")
        for anchors in self._order().split(self.batch_size):
            nbrs, w = self.sample_neighbors(anchors)
            B = anchors.numel()
            lo, hi = (B * rank) // world_size, (B * (rank + 1)) // world_size
            part = subgraph_batch(self.X, anchors[lo:hi], nbrs[lo:hi], w[lo:hi])
            global_ids = batch_node_ids(anchors, nbrs)
            sorted_ids, perm = torch.sort(global_ids)
            local_ids = part.node_ids.to(sorted_ids.device)
            rows = perm[torch.searchsorted(sorted_ids, local_ids)]
            yield BatchShard(part, rows, int(global_ids.numel()), B)

    def sample_neighbors(self, anchors: Tensor) -> tuple[Tensor, Tensor]:
        """Neighbours and edge weights of the anchors, both of shape (B, J).

        ``J`` is the number of (first ``n_neighbors``) graph neighbours, ``sample`` when
        sampling, or 0 without a graph.
        """
        if self.indices is None:
            empty = anchors.new_empty((anchors.numel(), 0))
            return empty, empty.float()
        nbrs, w = self.indices[anchors], self.weights[anchors]
        if self.sample is not None:
            total = w.sum(1, keepdim=True)
            probs = torch.where(total > 0, w, torch.ones_like(w))
            pick = torch.multinomial(probs, self.sample, replacement=True, generator=self.generator)
            nbrs = nbrs.gather(1, pick)
            w = (total / self.sample).expand(-1, self.sample)
        return nbrs, w

    def batch(self, anchors: Tensor) -> SubgraphBatch:
        """The batch of the given anchors (LongTensor of shape (B,), distinct)."""
        nbrs, w = self.sample_neighbors(anchors)
        return subgraph_batch(self.X, anchors, nbrs, w)

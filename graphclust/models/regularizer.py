"""The graph regulariser as a plug-in: DGG's neighbour term for any mixture model (issue 7).

A :class:`GraphRegularizer` is passed to an estimator (``graph_regularizer=``) or to
:func:`~graphclust.models.loop.train_cluster_model`. It supplies

- the batches: anchors plus sampled graph neighbours as a
  :class:`~graphclust.data.neighbors.SubgraphBatch` (:class:`~graphclust.models.batching.NeighborBatches`);
- the loss layer: :class:`~graphclust.nn.graph_reg.NeighborELBO`, which turns the model's
  per-node :class:`~graphclust.nn.graph_reg.GraphTerms` into
  ``(1 - weight) own_i + weight * sum_j w_ij L(x_i, x_j)``;
- the mixing prior of the neighbour term: DGG's node weights
  ``pi_i = (1 - weight) gamma_i + weight * sum_j w_ij gamma_j`` propagated over the whole graph
  once per epoch (:class:`~graphclust.nn.dgg.MixingPropagation`, ``pi="graph"``), or the
  model's own mixing weights (``pi="model"``).

The model's own term is left exactly as the model defines it (VIMCO bound, hard-max ELBO,
MI objective, ...). That is the one difference from :class:`~graphclust.estimators.DGG`,
whose self term also uses ``pi_i``; DGG keeps its own, pinned implementation.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from graphclust.graph.graph import KNNGraph
from graphclust.models.batching import NeighborBatches
from graphclust.nn.dgg import PI_FLOOR, MixingPropagation, mixing_matrix
from graphclust.nn.graph_reg import GraphTerms, NeighborELBO
from graphclust.nn.likelihood import Likelihood
from graphclust.utils import GraphclustError

__all__ = ["PI_MODES", "GraphRegularizer"]

PI_MODES = ("graph", "model")

GraphBuilder = Callable[[np.ndarray, np.ndarray, str], KNNGraph]


def _graph_hash(graph: KNNGraph) -> str:
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(graph.indices).tobytes())
    h.update(np.ascontiguousarray(graph.weights).tobytes())
    return h.hexdigest()[:16]


class GraphRegularizer:
    """DGG's weighted neighbour ELBO, for any model exposing :class:`GraphTerms`.

    Parameters
    ----------
    graph : KNNGraph or callable
        A kNN graph of the training data (e.g. ``KNNGraph.load("graph.npz")``), or a
        builder ``(X, latent, device) -> KNNGraph`` (such as
        :class:`~graphclust.models.pipeline.KNNGraphBuilder`) run on the pretrained
        autoencoder's latent means.
    weight : float
        Share of the neighbours in each node's objective, in ``[0, 1)`` (DGG: 1/2). ``0``
        leaves the model's own objective unchanged.
    n_sample : int or None
        Neighbours drawn per anchor and batch with probability ``w_ij`` (importance
        weighted, unbiased); ``None`` uses every neighbour.
    n_neighbors : int or None
        Use only each node's first ``n_neighbors`` neighbours (default: all).
    pi : {"graph", "model"}
        Mixing prior ``ln pi_i`` of the neighbour term: DGG's node weights propagated over
        the graph once per epoch, or the model's own mixing weights.

    Examples
    --------
    >>> reg = GraphRegularizer(KNNGraph.load("graph.npz"), weight=0.5)   # doctest: +SKIP
    >>> KDVAE(n_clusters=10, graph_regularizer=reg).fit(X)               # doctest: +SKIP
    """

    def __init__(
        self,
        graph: KNNGraph | GraphBuilder,
        weight: float = 0.5,
        n_sample: int | None = 1,
        n_neighbors: int | None = None,
        pi: str = "graph",
    ) -> None:
        self.graph = graph
        self.weight = weight
        self.n_sample = n_sample
        self.n_neighbors = n_neighbors
        self.pi = pi

    # ------------------------------------------------------------------ validation
    def validate(self, X: np.ndarray | None = None) -> None:
        """Check the settings (and the graph against ``X``); raise :class:`GraphclustError`."""
        if not isinstance(self.graph, KNNGraph) and not callable(self.graph):
            raise GraphclustError(
                f"GraphRegularizer needs a KNNGraph (KNNGraph.load('graph.npz')) or a builder "
                f"(X, latent, device) -> KNNGraph, got {type(self.graph).__name__}"
            )
        w = self.weight
        if isinstance(w, bool) or not isinstance(w, (int, float, np.floating)) or not 0 <= w < 1:
            raise GraphclustError(
                f"GraphRegularizer weight must lie in [0, 1) (the neighbours' share of each "
                f"node's objective; DGG uses 0.5), got {w!r}"
            )
        for name, value in (("n_sample", self.n_sample), ("n_neighbors", self.n_neighbors)):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1
            ):
                raise GraphclustError(f"{name} must be a positive integer or None, got {value!r}")
        if self.pi not in PI_MODES:
            raise GraphclustError(f"pi must be one of {PI_MODES}, got {self.pi!r}")
        if isinstance(self.graph, KNNGraph):
            if self.n_neighbors is not None and self.n_neighbors > self.graph.k:
                raise GraphclustError(
                    f"n_neighbors={self.n_neighbors} exceeds the graph's k={self.graph.k}"
                )
            if X is not None:
                self.graph.check_matches(X)
            if (self.graph.weights < 0).any() or not np.isfinite(self.graph.weights).all():
                raise GraphclustError("graph weights must be finite and >= 0")

    @property
    def needs_build(self) -> bool:
        """True when ``graph`` is a builder still to be run."""
        return not isinstance(self.graph, KNNGraph)

    def with_graph(self, graph: KNNGraph) -> GraphRegularizer:
        """A copy with ``graph`` (the result of the builder) in place of the builder."""
        return GraphRegularizer(graph, self.weight, self.n_sample, self.n_neighbors, self.pi)

    def config(self) -> dict[str, Any]:
        """JSON-able settings (the graph by content hash, a builder by repr) for fingerprints."""
        g = repr(self.graph) if self.needs_build else _graph_hash(self.graph)
        return {"graph": g, "weight": float(self.weight), "n_sample": self.n_sample,
                "n_neighbors": self.n_neighbors, "pi": self.pi}

    def __repr__(self) -> str:
        g = self.graph if self.needs_build else f"KNNGraph(n_nodes={self.graph.n_nodes}, k={self.graph.k})"
        return (f"GraphRegularizer({g}, weight={self.weight}, n_sample={self.n_sample}, "
                f"n_neighbors={self.n_neighbors}, pi={self.pi!r})")

    # ------------------------------------------------------------------ runtime pieces
    def _built(self) -> KNNGraph:
        if self.needs_build:
            raise GraphclustError(
                "this GraphRegularizer holds a graph builder; build the graph first "
                "(regularizer.with_graph(builder(X, latent, device)))"
            )
        return self.graph

    @property
    def self_weight(self) -> float:
        """Weight of a node's own objective: ``1 - weight``."""
        return 1.0 - float(self.weight)

    def batches(self, X: Tensor, batch_size: int, generator: torch.Generator | None) -> NeighborBatches:
        """Shuffled anchor batches with sampled neighbours over the graph."""
        return NeighborBatches(X, self._built(), batch_size, sample=self.n_sample,
                               n_neighbors=self.n_neighbors, generator=generator)

    def layer(self, likelihood: Likelihood | None) -> NeighborELBO:
        """The loss layer for a model with this likelihood."""
        return NeighborELBO(likelihood, self.self_weight)

    def mixing_matrix(self, device: torch.device | str = "cpu") -> Tensor:
        """The normalised propagation matrix ``P`` (sparse, self loops included)."""
        g = self._built()
        if self.n_neighbors is not None:
            g = g.topk(self.n_neighbors)
        return mixing_matrix(g, self.self_weight, device=device)

    def node_mixing(self, gamma: Tensor, P: Tensor) -> Tensor:
        """DGG's node mixing weights ``pi = P gamma`` (gamma detached), shape (n, n_clusters)."""
        return MixingPropagation(self.self_weight)(gamma, P)

    def objective(
        self,
        layer: NeighborELBO,
        x: Tensor,
        terms: GraphTerms,
        log_prior: Tensor,
        pi: Tensor | None,
        node_ids: Tensor,
        edge_index: Tensor,
        edge_weight: Tensor,
        n_targets: int,
    ) -> Tensor:
        """Regularised objective of the batch's targets, shape (n_targets,).

        Parameters
        ----------
        layer : NeighborELBO
            From :meth:`layer`.
        x : Tensor of shape (n_nodes, n_features)
        terms : GraphTerms
        log_prior : Tensor of shape (n_clusters,)
            The model's ``ln pi`` (used with ``pi="model"``).
        pi : Tensor of shape (n_samples, n_clusters) or None
            Node mixing weights of the whole data (``pi="graph"``).
        node_ids : LongTensor of shape (n_nodes,)
            Global rows of the batch's nodes.
        edge_index, edge_weight, n_targets :
            The batch's edges (see :class:`~graphclust.data.neighbors.SubgraphBatch`).
        """
        if self.pi == "graph":
            if pi is None:
                raise GraphclustError("pi='graph' needs the node mixing weights of the epoch")
            log_pi = pi[node_ids].clamp_min(PI_FLOOR).log()
        else:
            log_pi = log_prior.expand(x.shape[0], -1)
        return layer(x, terms, log_pi, edge_index, edge_weight, n_targets=n_targets)

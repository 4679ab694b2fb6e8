"""The DGG objective and its closed-form mixing update, written as PyG message passing.

Design note ``DGG.md`` sections 2-4. For a node ``i`` with neighbours ``j`` (weights
``w_ij``, ``sum_j w_ij = 1``) the objective is

    objective_i = 1/2 L(x_i) + 1/2 sum_j w_ij L(x_i, x_j)
                = sum over in-edges (j -> i) of  w'_ij m_ij,
    m_ij = R_ij + A_j + <gamma_j, ln pi_i>,      R_ij = ln p(x_i | x^(z_j)),

with a self loop of weight 1/2 and neighbour edges of weight ``w_ij / 2``. All node-level
work (encoder, decoder, ``gamma``, ``A``) is done once per node by the caller; the layer
only evaluates a likelihood row and a ``K``-dim dot product per edge.

Edge weights are row-normalised per target inside the layer (over the edges present in
the batch), so an unnormalised graph, a full neighbour list and an importance-weighted
sample all give ``sum_j w'_ij = 1 - self_weight``. A target with no in-edges (VaDE, or an
isolated node) gets a self loop of weight 1, so its objective is exactly the VaDE ELBO.

Edges point ``neighbour -> node`` (``edge_index[0]`` source ``j``, ``edge_index[1]``
target ``i``), PyG's ``source_to_target`` flow, as in :class:`~graphclust.graph.graph.KNNGraph`.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor
from torch_geometric.nn import MessagePassing
from torch_geometric.utils import spmm, to_torch_csr_tensor

from graphclust.graph.graph import KNNGraph
from graphclust.nn.likelihood import Likelihood
from graphclust.utils import GraphclustError

__all__ = ["PI_FLOOR", "DGGObjective", "MixingPropagation", "mixing_matrix", "normalize_edges"]

#: ``pi`` is floored here before the log (design note section 8).
PI_FLOOR = 1e-10


def _check_self_weight(self_weight: float) -> float:
    if not 0.0 < float(self_weight) <= 1.0:
        raise GraphclustError(f"self_weight must lie in (0, 1], got {self_weight} (DGG uses 0.5)")
    return float(self_weight)


def normalize_edges(
    edge_index: Tensor,
    edge_weight: Tensor | None,
    n_targets: int,
    self_weight: float = 0.5,
) -> tuple[Tensor, Tensor]:
    """Row-normalise in-edge weights and append one weighted self loop per target.

    Parameters
    ----------
    edge_index : LongTensor of shape (2, E)
        ``neighbour -> target`` edges; every target lies in ``[0, n_targets)``.
    edge_weight : Tensor of shape (E,), optional
        Non-negative weights (``None``: all ones).
    n_targets : int
        Nodes ``0 .. n_targets-1`` are targets (the batch's anchors come first).
    self_weight : float
        Weight of the self loop of a target that has neighbours (``1/2`` in DGG).

    Returns
    -------
    edge_index : LongTensor of shape (2, E + n_targets)
        The input edges followed by the self loops ``(i, i)``.
    edge_weight : Tensor of shape (E + n_targets,)
        ``(1 - self_weight) w_ij / sum_l w_il`` on neighbour edges; ``self_weight`` on
        the self loop, or ``1`` for a target without (positively weighted) neighbours.
    """
    alpha = _check_self_weight(self_weight)
    device = edge_index.device
    src, dst = edge_index[0], edge_index[1]
    if edge_weight is None:
        edge_weight = torch.ones(src.numel(), device=device)
    if dst.numel() and int(dst.max()) >= n_targets:
        raise GraphclustError(
            f"an edge points into node {int(dst.max())}, but only the first {n_targets} nodes are "
            "targets; put the anchors first"
        )
    w = edge_weight.to(torch.float32)
    wsum = torch.zeros(n_targets, device=device, dtype=w.dtype).index_add_(0, dst, w)
    has = wsum > 0
    scaled = (1.0 - alpha) * w / wsum.clamp_min(torch.finfo(w.dtype).tiny)[dst]
    loop_w = torch.where(has, torch.full_like(wsum, alpha), torch.ones_like(wsum))
    loops = torch.arange(n_targets, device=device)
    out_index = torch.cat([edge_index, torch.stack([loops, loops])], dim=1)
    return out_index, torch.cat([scaled, loop_w])


class DGGObjective(MessagePassing):
    """Per-node DGG objective ``sum_{j -> i} w'_ij (R_ij + A_j + <gamma_j, ln pi_i>)``.

    Parameters
    ----------
    likelihood : Likelihood
        Scores ``R_ij = ln p(x_i | x^(z_j))`` from ``x_i`` and ``j``'s decoder output.
    self_weight : float
        Self-loop weight (``1/2`` in DGG; neighbours share the rest).

    Notes
    -----
    ``forward`` returns the objective (to be *maximised*) of each target node; the loss of
    a batch is ``-objective.mean()``.
    """

    def __init__(self, likelihood: Likelihood, self_weight: float = 0.5) -> None:
        super().__init__(aggr="add", flow="source_to_target", node_dim=0)
        self.likelihood = likelihood
        self.self_weight = _check_self_weight(self_weight)

    def forward(
        self,
        x: Tensor,
        recon: Tensor,
        latent_term: Tensor,
        gamma: Tensor,
        log_pi: Tensor,
        edge_index: Tensor,
        edge_weight: Tensor | None = None,
        n_targets: int | None = None,
    ) -> Tensor:
        """Objective of each target node.

        Parameters
        ----------
        x : Tensor of shape (n_nodes, n_features)
            Inputs of the batch's nodes.
        recon : Tensor of shape (n_nodes, n_features)
            Decoder output ``x^(z_j)`` of each node (one sample ``z_j ~ q(z | x_j)``).
        latent_term : Tensor of shape (n_nodes,)
            ``A_j`` (see :meth:`~graphclust.models.mixture.GaussianMixturePrior.latent_term`).
        gamma : Tensor of shape (n_nodes, n_clusters)
            ``q(c | x_j)``.
        log_pi : Tensor of shape (n_nodes, n_clusters)
            ``ln pi_i`` (only target rows are read; floored by the caller).
        edge_index : LongTensor of shape (2, E)
            ``neighbour -> target`` edges, without self loops.
        edge_weight : Tensor of shape (E,), optional
        n_targets : int, optional
            The first ``n_targets`` nodes are targets (default: all).

        Returns
        -------
        Tensor of shape (n_targets,)
        """
        n = x.size(0)
        n_targets = n if n_targets is None else int(n_targets)
        ei, ew = normalize_edges(edge_index, edge_weight, n_targets, self.self_weight)
        out = self.propagate(
            ei,
            x=x,
            recon=recon,
            latent_term=latent_term,
            gamma=gamma,
            log_pi=log_pi,
            edge_weight=ew,
            size=(n, n),
        )
        return out[:n_targets]

    def message(
        self,
        x_i: Tensor,
        recon_j: Tensor,
        latent_term_j: Tensor,
        gamma_j: Tensor,
        log_pi_i: Tensor,
        edge_weight: Tensor,
    ) -> Tensor:
        m_ij = (
            self.likelihood.log_prob(x_i, recon_j)
            + latent_term_j
            + (gamma_j * log_pi_i).sum(-1)
        )
        return edge_weight * m_ij

    def edge_messages(
        self,
        x: Tensor,
        recon: Tensor,
        latent_term: Tensor,
        gamma: Tensor,
        log_pi: Tensor,
        edge_index: Tensor,
    ) -> Tensor:
        """Unweighted messages ``m_ij`` of each edge, shape (E,) (for tests and inspection)."""
        src, dst = edge_index[0], edge_index[1]
        return self.message(
            x[dst], recon[src], latent_term[src], gamma[src], log_pi[dst],
            torch.ones(src.numel(), device=x.device),
        )


class MixingPropagation(MessagePassing):
    """Closed-form node mixing weights ``pi_i = 1/2 gamma_i + 1/2 sum_j w_ij gamma_j``.

    One propagation of ``gamma`` (detached) over the weighted graph with self loops
    (normalised as in :func:`normalize_edges`), so every ``pi_i`` is a simplex. Call it
    either with an ``edge_index`` (per-edge messages; used inside a batch) or with a sparse
    matrix from :func:`mixing_matrix` (one sparse matmul over the whole graph).

    Parameters
    ----------
    self_weight : float
        Weight of ``gamma_i`` itself.
    """

    def __init__(self, self_weight: float = 0.5) -> None:
        super().__init__(aggr="add", flow="source_to_target", node_dim=0)
        self.self_weight = _check_self_weight(self_weight)

    def forward(
        self,
        gamma: Tensor,
        edge_index: Tensor,
        edge_weight: Tensor | None = None,
        n_targets: int | None = None,
    ) -> Tensor:
        """Mixing weights of the targets.

        Parameters
        ----------
        gamma : Tensor of shape (n_nodes, n_clusters)
        edge_index : LongTensor of shape (2, E), or a sparse (n_targets, n_nodes) matrix
            Raw ``neighbour -> target`` edges, or a matrix from :func:`mixing_matrix`
            (already normalised, self loops included; ``edge_weight`` then unused).
        edge_weight : Tensor of shape (E,), optional
        n_targets : int, optional
            The first ``n_targets`` nodes are targets (default: all).

        Returns
        -------
        Tensor of shape (n_targets, n_clusters)
        """
        gamma = gamma.detach()
        n = gamma.size(0)
        if edge_index.layout != torch.strided:  # sparse matrix: one spmm, weights included
            ei, ew, size, n_targets = edge_index, None, None, edge_index.size(0)
        else:
            n_targets = n if n_targets is None else int(n_targets)
            ei, ew = normalize_edges(edge_index, edge_weight, n_targets, self.self_weight)
            size = (n, n)
        # one propagate call: PyG derives the generated propagate's signature from it
        return self.propagate(ei, gamma=gamma, edge_weight=ew, size=size)[:n_targets]

    def message(self, gamma_j: Tensor, edge_weight: Tensor) -> Tensor:
        return edge_weight.unsqueeze(-1) * gamma_j

    def message_and_aggregate(self, adj_t: Tensor, gamma: Tensor) -> Tensor:
        return spmm(adj_t, gamma, reduce="sum")


def mixing_matrix(
    graph: KNNGraph, self_weight: float = 0.5, device: torch.device | str = "cpu"
) -> Tensor:
    """The whole graph's normalised mixing matrix ``P`` (self loops included), sparse CSR.

    ``P[i, i] = self_weight`` and ``P[i, j] = (1 - self_weight) w_ij / sum_l w_il``, so
    ``pi = P @ gamma`` is the DGG mixing update; shape ``(n_nodes, n_nodes)``.
    """
    edge_index, edge_weight = graph.to_edge_index()
    ei, ew = normalize_edges(edge_index, edge_weight, graph.n_nodes, self_weight)
    n = graph.n_nodes
    # rows are targets i, columns sources j; torch's "sparse CSR is beta" notices are noise here
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return to_torch_csr_tensor(ei.flip(0).to(device), ew.to(device), size=(n, n))

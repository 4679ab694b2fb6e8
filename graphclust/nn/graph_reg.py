"""DGG's neighbour term for any mixture model: the weighted neighbour ELBO as message passing.

DGG (design note ``DGG.md``) maximises, per node ``i`` with graph weights ``w_ij``
(``sum_j w_ij = 1``),

    objective_i = a * own_i + (1 - a) * sum_j w_ij L(x_i, x_j),

where ``own_i`` is the node's own objective and ``L(x_i, x_j)`` explains ``x_i`` with the
posterior of its neighbour ``x_j``. This module computes that sum for any model that
exposes the per-node quantities of :class:`GraphTerms`; the neighbour ELBO is

    m_ij = sum_c rho_jc ln p(x_i | xhat_jc) + A_j + <gamma_j, ln pi_i>,

- ``xhat_jc``: ``C`` decoder outputs of node ``j`` with weights ``rho_jc`` (DGG/VaDE: one
  sample of ``q(z | x_j)``; k-DVAE: the decoder of ``j``'s cluster; the slides' GMVAE: one
  ``z ~ q(z | y, x_j)`` per cluster ``y`` with ``rho_j = q(y | x_j)``);
- ``A_j``: every term that depends on ``j`` alone (KL terms, entropy of ``q(y | x_j)``);
- ``gamma_j = q(c | x_j)`` and ``ln pi_i``: the mixing prior of the target (the model's
  own, or DGG's node weights propagated over the graph).

A model without a decoder (VCAMI) passes ``recon=None``; then ``m_ij = A_j + <gamma_j,
ln pi_i>``, which with ``A_j = H(gamma_j)`` is ``-KL(gamma_j || pi_i)``: agreement of ``j``'s
posterior with ``i``'s neighbourhood.

The self loop (weight ``a``) carries ``own_i`` itself, not the formula: a model's own
objective may be a multi-sample bound (VIMCO) or a hard maximum (k-DVAE). A graph edge
``i -> i`` also carries ``own_i`` (a node explained by its own posterior is the model's
own objective). Hence a graph whose neighbour weights are all zero, or whose neighbours are
the nodes themselves, leaves every node's objective equal to ``own_i``.

Weights are normalised exactly as in DGG (:func:`graphclust.nn.dgg.normalize_edges`); with
a single reconstruction per node (``C = 1``) and ``own_i`` set to DGG's self message the
result equals :class:`~graphclust.nn.dgg.DGGObjective` (tested).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor
from torch_geometric.nn import MessagePassing

from graphclust.nn.dgg import _check_self_weight, normalize_edges
from graphclust.nn.likelihood import Likelihood
from graphclust.utils import GraphclustError

__all__ = ["GraphTerms", "NeighborELBO"]


class GraphTerms(NamedTuple):
    """Per-node quantities a model exposes to the graph regulariser (one batch).

    Attributes
    ----------
    own : Tensor of shape (n,)
        The model's own objective of each node (to be maximised; its batch mean is the
        model's objective without a graph). Only the targets' rows are read.
    gamma : Tensor of shape (n, n_clusters)
        ``q(c | x_j)``.
    latent_term : Tensor of shape (n,)
        ``A_j``.
    recon : Tensor of shape (n, C, n_outputs) or None
        Decoder outputs ``xhat_jc`` (``None``: a model without a decoder).
    recon_weight : Tensor of shape (n, C) or None
        ``rho_jc`` (rows sum to one); ``None`` weighs the ``C`` outputs equally.
    """

    own: Tensor
    gamma: Tensor
    latent_term: Tensor
    recon: Tensor | None = None
    recon_weight: Tensor | None = None


class NeighborELBO(MessagePassing):
    """Per-target objective ``a * own_i + sum_{j -> i} w'_ij m_ij`` (module docstring).

    Parameters
    ----------
    likelihood : Likelihood or None
        Scores ``ln p(x_i | xhat_jc)``; may be ``None`` only for models without a decoder.
    self_weight : float
        ``a``: weight of the node's own objective when it has neighbours (DGG: 1/2).

    Notes
    -----
    Edges point ``neighbour -> node`` (``edge_index[0]`` the source ``j``,
    ``edge_index[1]`` the target ``i``), as everywhere in graphclust.
    """

    def __init__(self, likelihood: Likelihood | None, self_weight: float = 0.5) -> None:
        super().__init__(aggr="add", flow="source_to_target", node_dim=0)
        self.likelihood = likelihood
        self.self_weight = _check_self_weight(self_weight)

    def forward(
        self,
        x: Tensor,
        terms: GraphTerms,
        log_pi: Tensor,
        edge_index: Tensor,
        edge_weight: Tensor | None = None,
        n_targets: int | None = None,
    ) -> Tensor:
        """Objective of each target node.

        Parameters
        ----------
        x : Tensor of shape (n_nodes, n_features)
        terms : GraphTerms
            Of the same ``n_nodes`` rows.
        log_pi : Tensor of shape (n_nodes, n_clusters)
            ``ln pi_i`` of the targets (other rows unused), floored by the caller.
        edge_index : LongTensor of shape (2, E)
            ``neighbour -> target`` edges (local ids; no self loops needed).
        edge_weight : Tensor of shape (E,), optional
        n_targets : int, optional
            The first ``n_targets`` nodes are targets (default: all).

        Returns
        -------
        Tensor of shape (n_targets,)
        """
        n = x.size(0)
        n_targets = n if n_targets is None else int(n_targets)
        self._check(x, terms, log_pi)
        E = edge_index.size(1)
        ei, ew = normalize_edges(edge_index, edge_weight, n_targets, self.self_weight)
        out = self.propagate(
            ei[:, :E],
            x=x,
            recon=terms.recon,
            recon_weight=terms.recon_weight,
            latent_term=terms.latent_term,
            gamma=terms.gamma,
            log_pi=log_pi,
            own=terms.own,
            edge_weight=ew[:E],
            size=(n, n),
        )
        return out[:n_targets] + ew[E:] * terms.own[:n_targets]

    def _check(self, x: Tensor, terms: GraphTerms, log_pi: Tensor) -> None:
        n = x.size(0)
        sizes = {"own": terms.own.shape[0], "gamma": terms.gamma.shape[0],
                 "latent_term": terms.latent_term.shape[0], "log_pi": log_pi.shape[0]}
        if terms.recon is not None:
            sizes["recon"] = terms.recon.shape[0]
            if terms.recon.dim() != 3:
                raise GraphclustError(
                    f"recon must be (n_nodes, C, n_outputs), got shape {tuple(terms.recon.shape)}"
                )
            if self.likelihood is None:
                raise GraphclustError("a model with reconstructions needs a likelihood to score them")
        bad = {k: v for k, v in sizes.items() if v != n}
        if bad:
            raise GraphclustError(f"graph terms must have one row per node ({n}); got {bad}")

    def reconstruction(
        self, x_i: Tensor, recon_j: Tensor | None, recon_weight_j: Tensor | None
    ) -> Tensor:
        """``sum_c rho_jc ln p(x_i | xhat_jc)`` per edge, shape (E,) (zeros without ``recon``)."""
        if recon_j is None:
            return x_i.new_zeros(x_i.shape[0])
        C = recon_j.shape[1]
        ll = self.likelihood.log_prob(x_i.unsqueeze(1).expand(-1, C, -1), recon_j)  # (E, C)
        if recon_weight_j is None:
            return ll.mean(-1)
        return (recon_weight_j * ll).sum(-1)

    def message(
        self,
        x_i: Tensor,
        recon_j: Tensor | None,
        recon_weight_j: Tensor | None,
        latent_term_j: Tensor,
        gamma_j: Tensor,
        log_pi_i: Tensor,
        own_j: Tensor,
        edge_weight: Tensor,
        edge_index_i: Tensor,
        edge_index_j: Tensor,
    ) -> Tensor:
        m_ij = (
            self.reconstruction(x_i, recon_j, recon_weight_j)
            + latent_term_j
            + (gamma_j * log_pi_i).sum(-1)
        )
        m_ij = torch.where(edge_index_i == edge_index_j, own_j, m_ij)  # an edge i -> i: own_i
        return edge_weight * m_ij

    def edge_messages(
        self, x: Tensor, terms: GraphTerms, log_pi: Tensor, edge_index: Tensor
    ) -> Tensor:
        """Unweighted messages ``m_ij`` of each edge, shape (E,) (for tests and inspection)."""
        src, dst = edge_index[0], edge_index[1]

        def rows(t: Tensor | None, idx: Tensor) -> Tensor | None:
            return None if t is None else t[idx]

        return self.message(
            x[dst], rows(terms.recon, src), rows(terms.recon_weight, src),
            terms.latent_term[src], terms.gamma[src], log_pi[dst], terms.own[src],
            torch.ones(src.numel(), device=x.device), dst, src,
        )

"""The DGG objective computed with DGL's message passing (optional ``dgl`` extra).

:class:`DGLDGGObjective` gives the same number, and the same gradients, as the PyG
:class:`~graphclust.nn.dgg.DGGObjective`: the node terms (``x``, ``recon``, ``A``,
``gamma``, ``ln pi``, e.g. from :meth:`graphclust.models.mixture.GMVAE.node_terms`) and
the edge normalisation (:func:`~graphclust.nn.dgg.normalize_edges`) are the PyG module's
own, and so is the edge message ``m_ij`` (:meth:`DGGObjective.message`, called from a DGL
edge UDF). Only the aggregation differs: ``g.update_all(message_udf, dgl.function.sum)``.

Graphs come from :meth:`graphclust.graph.graph.KNNGraph.to_dgl` (edge feature ``"w"``) or
:func:`subgraph_batch_to_dgl`. Edges point ``neighbour -> node`` (``j -> i``), as in PyG.

DGL is imported inside the functions only, so ``import graphclust`` never imports it; DGL
from PyPI (2.1.0) loads only beside torch 2.0.0-2.2.1 (``scripts/dgl_lane.sh`` builds such an
environment and runs the DGL tests).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from graphclust.nn.dgg import DGGObjective, normalize_edges
from graphclust.nn.likelihood import Likelihood
from graphclust.utils import GraphclustError

if TYPE_CHECKING:  # pragma: no cover - annotations only
    from graphclust.data.neighbors import SubgraphBatch

__all__ = ["DGL_INSTALL_HINT", "DGLDGGObjective", "import_dgl", "subgraph_batch_to_dgl"]

#: What to do when DGL is missing or does not load.
DGL_INSTALL_HINT = (
    "install it with `pip install 'graphclust[dgl]'` (or `pip install dgl==2.1.0`) in an "
    "environment with torch 2.0.0-2.2.1, since DGL 2.1 from PyPI loads only beside those torch "
    "versions; `bash scripts/dgl_lane.sh` builds such an environment (torch 2.2.1, dgl 2.1.0)"
)


def import_dgl() -> Any:
    """Import and return the ``dgl`` module, or raise a :class:`GraphclustError` saying how to
    install it.

    Raises
    ------
    GraphclustError
        When ``dgl`` is not installed or fails to load beside this torch (DGL raises
        ``ImportError``, ``OSError`` or ``FileNotFoundError`` for a torch it was not built for).
    """
    try:
        import dgl
    except Exception as exc:  # ImportError, or DGL's native libraries failing to load
        raise GraphclustError(
            f"DGL is not available ({type(exc).__name__}: {exc}); {DGL_INSTALL_HINT}"
        ) from exc
    return dgl


def subgraph_batch_to_dgl(batch: SubgraphBatch, weight_key: str = "w") -> Any:
    """A subgraph batch as a ``dgl.DGLGraph`` over the batch's local nodes.

    Parameters
    ----------
    batch : SubgraphBatch
        Local ``neighbour -> anchor`` edges; anchors are nodes ``0 .. n_anchors-1``.
    weight_key : str
        Edge feature that receives ``batch.edge_weight``.

    Returns
    -------
    dgl.DGLGraph
        ``len(batch.node_ids)`` nodes, one edge per column of ``batch.edge_index`` (same
        order), ``ndata[dgl.NID]`` = the global node ids. Pass ``n_targets=batch.n_anchors``
        to :class:`DGLDGGObjective` to score the anchors only.
    """
    dgl = import_dgl()
    src, dst = batch.edge_index[0], batch.edge_index[1]
    g = dgl.graph((src, dst), num_nodes=int(batch.node_ids.numel()), device=src.device)
    g.edata[weight_key] = batch.edge_weight
    g.ndata[dgl.NID] = batch.node_ids
    return g


class DGLDGGObjective(torch.nn.Module):
    """Per-node DGG objective ``sum_{j -> i} w'_ij (R_ij + A_j + <gamma_j, ln pi_i>)`` with DGL.

    The same objective as :class:`~graphclust.nn.dgg.DGGObjective` (same constructor, same
    node terms, same per-edge message and edge normalisation, both reused from it); the edge
    aggregation is DGL's ``update_all`` with an edge UDF and ``dgl.function.sum``.

    Parameters
    ----------
    likelihood : Likelihood
        Scores ``R_ij = ln p(x_i | x^(z_j))`` from ``x_i`` and ``j``'s decoder output.
    self_weight : float
        Self-loop weight (``1/2`` in DGG; neighbours share the rest).

    Notes
    -----
    ``forward`` returns the objective (to be *maximised*) of each target node; the loss of a
    batch is ``-objective.mean()``. Constructing the module does not need DGL; ``forward``
    does.
    """

    def __init__(self, likelihood: Likelihood, self_weight: float = 0.5) -> None:
        super().__init__()
        # the PyG module supplies the message m_ij and the edge normalisation
        self.terms = DGGObjective(likelihood, self_weight)

    @property
    def likelihood(self) -> Likelihood:
        return self.terms.likelihood

    @property
    def self_weight(self) -> float:
        return self.terms.self_weight

    def forward(
        self,
        g: Any,
        x: Tensor,
        recon: Tensor,
        latent_term: Tensor,
        gamma: Tensor,
        log_pi: Tensor,
        n_targets: int | None = None,
        weight_key: str | None = "w",
    ) -> Tensor:
        """Objective of each target node.

        Parameters
        ----------
        g : dgl.DGLGraph
            ``neighbour -> target`` edges without self loops (from
            :meth:`KNNGraph.to_dgl` or :func:`subgraph_batch_to_dgl`); not modified.
        x : Tensor of shape (n_nodes, n_features)
            Inputs of the graph's nodes.
        recon : Tensor of shape (n_nodes, n_features)
            Decoder output ``x^(z_j)`` of each node.
        latent_term : Tensor of shape (n_nodes,)
            ``A_j``.
        gamma : Tensor of shape (n_nodes, n_clusters)
            ``q(c | x_j)``.
        log_pi : Tensor of shape (n_nodes, n_clusters)
            ``ln pi_i`` (only target rows are read; floored by the caller).
        n_targets : int, optional
            The first ``n_targets`` nodes are targets (default: all).
        weight_key : str or None
            Edge feature holding ``w_ij`` (``None``, or a key the graph lacks: all ones).

        Returns
        -------
        Tensor of shape (n_targets,)
        """
        dgl = import_dgl()
        n = int(g.num_nodes())
        for name, t in (("x", x), ("recon", recon), ("latent_term", latent_term),
                        ("gamma", gamma), ("log_pi", log_pi)):
            if t.shape[0] != n:
                raise GraphclustError(
                    f"{name} has {t.shape[0]} rows but the DGL graph has {n} nodes; pass one "
                    "row per graph node (the batch's local nodes, anchors first)"
                )
        n_targets = n if n_targets is None else int(n_targets)
        src, dst = g.edges(order="eid")
        edge_index = torch.stack([src, dst]).to(torch.int64)
        edge_weight = g.edata[weight_key] if weight_key and weight_key in g.edata else None
        if edge_weight is not None and edge_weight.dim() != 1:
            raise GraphclustError(
                f"edge feature {weight_key!r} has shape {tuple(edge_weight.shape)}; expected "
                "one weight per edge, shape (n_edges,)"
            )
        ei, ew = normalize_edges(edge_index, edge_weight, n_targets, self.self_weight)
        # a graph of its own (input edges + target self loops, same order as ``ew``), so the
        # caller's graph and its features are left alone
        h = dgl.graph((ei[0], ei[1]), num_nodes=n, device=ei.device)
        h.ndata["x"], h.ndata["recon"], h.ndata["gamma"], h.ndata["log_pi"] = (
            x, recon, gamma, log_pi
        )
        h.ndata["latent_term"] = latent_term
        h.edata["w"] = ew
        h.update_all(self._message, dgl.function.sum("m", "objective"))
        return h.ndata["objective"][:n_targets]

    def _message(self, edges: Any) -> dict[str, Tensor]:
        """DGL edge UDF: ``w'_ij m_ij`` of each edge ``j -> i`` (``src`` is ``j``, ``dst`` ``i``)."""
        return {
            "m": self.terms.message(
                x_i=edges.dst["x"],
                recon_j=edges.src["recon"],
                latent_term_j=edges.src["latent_term"],
                gamma_j=edges.src["gamma"],
                log_pi_i=edges.dst["log_pi"],
                edge_weight=edges.data["w"],
            )
        }

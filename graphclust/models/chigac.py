"""CHiGac: cluster-wise hierarchical generative model for amortised clustering, on kNN graphs.

Implements the design note ``CHIGAC.md`` (sections 1, 4, 5). A partition is built one
cluster at a time; at step ``k`` the model

1. scores the unassigned points and picks an *anchor* (seed eq. 3, with the per-point
   repulsion the note recommends, Q1; ``repulsion="literal"`` reproduces the printed formula,
   whose repulsion term is constant per graph and cancels in the softmax),
2. encodes the unassigned points relative to the anchor (local kNN + token attention),
3. draws a cluster latent ``z^k`` (prior ``p(z | S_I)``, posterior ``q(z | h, S_I)``),
4. predicts a Bernoulli membership ``h_i^k`` for every other unassigned point,
5. removes the new cluster and adds its summary to the running summary ``G``.

Training maximises the per-step bound of seed eq. 1 (teacher forcing on the true,
ordered partition): ``sum_k [ L_k^{zh} - KL(q(I^k) || p(I^k)) ]`` where ``L_k^{zh}`` is an
importance-weighted bound (``w`` samples; ``w = 1`` is eq. 1 literally) optionally tightened by
ergodic amortised inference (EAI, seed Theorem 1): ``M`` first-order SVI steps on
``q(z^k)``'s parameters, and one log-mean over every proposal's importance weights. The
anchor KL is exact; the membership term's dependence on the sampled anchor uses RLOO over
``R`` anchors (Q4).

Module boundaries pass dataclasses (:class:`StepGraph`, :class:`StepFeatures`,
:class:`ElboTerms`, :class:`BoundEstimates`, :class:`Clustering`), never long tuples.

Shapes: ``N`` nodes of a PyG batch of ``B`` graphs, ``d`` model width, ``n`` the nodes still
unassigned at a step, ``S`` importance samples.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.utils import scatter

from graphclust.data.synthetic import EDGE_FEATURES
from graphclust.nn.attention import (
    AttentionBlock,
    GenDropout,
    SetPool,
    group_argmax,
    masked_log_softmax,
    tanh_mlp,
)
from graphclust.utils import GraphclustError

__all__ = [
    "ANCHOR_GRADS",
    "ANCHOR_PRIORS",
    "EAI_WEIGHTS",
    "REPULSIONS",
    "BoundEstimates",
    "ChigacConfig",
    "ChigacEncoder",
    "ChigacModel",
    "Clustering",
    "ElboTerms",
    "StepFeatures",
    "StepGraph",
    "anchor_scores",
    "bernoulli_log_lik",
    "categorical_kl",
    "eai_bound",
    "gaussian_log_prob",
    "induced_subgraph",
    "infer_clusters",
    "iwae_bound",
    "rloo_surrogate",
]

REPULSIONS = ("corrected", "literal", "off")
ANCHOR_GRADS = ("rloo", "none", "gumbel")
ANCHOR_PRIORS = ("learned", "uniform")
EAI_WEIGHTS = ("uniform", "learned")
_LOG_SIGMA = (-7.0, 5.0)


# =========================================================================== config
@dataclass(frozen=True)
class ChigacConfig:
    """Architecture and objective settings (design note section 6.2, CPU column).

    Attributes
    ----------
    in_dim : int
        Input dimension ``D``.
    dim, heads : int
        Model width ``d`` and attention heads ``H``.
    n_layers, n_tokens : int
        Encoder layers ``L`` and global tokens ``T`` per graph (0: local attention only).
    latent_dim : int
        ``d_z`` of the cluster latent.
    hidden : int
        Width of every tanh MLP (``H_f``).
    dropout : float
        At the input of every hidden layer (never before an output layer).
    tau : float
        Initial anchor temperature (learnable, clamped to [0.01, 1]).
    repulsion : {"corrected", "literal", "off"}
        Anchor score of seed eq. 3: per-point repulsion from earlier prototypes
        (recommended), the printed formula, or none.
    lambda_rep : float
        Weight of the corrected repulsion.
    anchor_prior : {"learned", "uniform"}
        ``p(I^k)`` from a prior prototype, or uniform over the unassigned points (CCP).
    n_z_samples : int
        Importance samples ``w`` of ``z`` per step.
    n_anchor_samples : int
        Anchors ``R`` drawn from ``q(I^k)`` per step (RLOO needs ``R >= 2``).
    anchor_grad : {"rloo", "none", "gumbel"}
        Gradient of the membership term w.r.t. ``q(I^k)``: RLOO score function,
        none (pathwise terms only), or straight-through Gumbel-softmax (one sample).
    eai_steps : int
        Inner SVI steps ``M`` of EAI (0: plain amortised bound).
    eai_lr, eai_clip : float
        Inner step size ``eta`` and the inner gradient-norm clip.
    eai_weights : {"uniform", "learned"}
        Mixture weights ``pi_m`` over the ``M + 1`` proposals.
    kl_weight : float
        Weight of the anchor KL (the seed's "lambda", Q12; 1 = the bound).
    """

    in_dim: int = 2
    dim: int = 64
    heads: int = 4
    n_layers: int = 2
    n_tokens: int = 8
    latent_dim: int = 32
    hidden: int = 128
    dropout: float = 0.1
    tau: float = 0.1
    repulsion: str = "corrected"
    lambda_rep: float = 1.0
    anchor_prior: str = "learned"
    n_z_samples: int = 4
    n_anchor_samples: int = 2
    anchor_grad: str = "rloo"
    eai_steps: int = 1
    eai_lr: float = 0.1
    eai_clip: float = 10.0
    eai_weights: str = "uniform"
    kl_weight: float = 1.0

    def __post_init__(self) -> None:
        ints = {"in_dim": 1, "dim": 1, "heads": 1, "n_layers": 0, "n_tokens": 0,
                "latent_dim": 1, "hidden": 1, "n_z_samples": 1, "n_anchor_samples": 1,
                "eai_steps": 0}
        for name, low in ints.items():
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
                raise GraphclustError(f"{name} must be an integer >= {low}, got {v!r}")
        if self.dim % self.heads:
            raise GraphclustError(
                f"dim={self.dim} must be divisible by heads={self.heads}; e.g. dim=64, heads=4"
            )
        for name, choices in (("repulsion", REPULSIONS), ("anchor_grad", ANCHOR_GRADS),
                              ("anchor_prior", ANCHOR_PRIORS), ("eai_weights", EAI_WEIGHTS)):
            if getattr(self, name) not in choices:
                raise GraphclustError(
                    f"unknown {name} {getattr(self, name)!r}; expected one of {choices}"
                )
        if not 0.0 <= self.dropout < 1.0:
            raise GraphclustError(f"dropout must lie in [0, 1), got {self.dropout}")
        if not 0.01 <= self.tau <= 1.0:
            raise GraphclustError(f"tau must lie in [0.01, 1], got {self.tau}")
        for name in ("lambda_rep", "eai_lr", "eai_clip", "kl_weight"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise GraphclustError(f"{name} must be a finite number >= 0, got {v!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# =========================================================================== pure functions
def anchor_scores(e_hat: Tensor, proto: Tensor, mbar: Tensor, tau: Tensor | float,
                  repulsion: str = "corrected", lambda_rep: float = 1.0) -> Tensor:
    """Anchor logits of seed eq. 3 for every candidate node.

    ``corrected``: ``s_j = [cos(e_j, m) - lambda_rep <e_j/|e_j|, mbar>] / tau``;
    ``literal``: ``s_j = [cos(e_j, m) - <m/|m|, mbar>] / tau`` (the printed formula; the second
    term is the same for every ``j``); ``off``: ``cos(e_j, m) / tau``.
    ``mbar`` is the mean of the unit prototypes of the earlier clusters, so
    ``<u, mbar> = (1/(k-1)) sum_{l<k} cos(u, m^l)``; it is zero at ``k = 1``.

    Parameters
    ----------
    e_hat : Tensor of shape (n, d)
        Anchor keys of the candidates.
    proto : Tensor of shape (n, d)
        The current prototype ``m^k`` of each candidate's graph.
    mbar : Tensor of shape (n, d)
        Mean unit prototype of the earlier clusters of each candidate's graph.
    tau : float or Tensor
    repulsion : {"corrected", "literal", "off"}
    lambda_rep : float

    Returns
    -------
    Tensor of shape (n,)
    """
    eh = F.normalize(e_hat, dim=-1)
    pr = F.normalize(proto, dim=-1)
    s = (eh * pr).sum(-1)
    if repulsion == "corrected":
        s = s - lambda_rep * (eh * mbar).sum(-1)
    elif repulsion == "literal":
        s = s - (pr * mbar).sum(-1)
    elif repulsion != "off":
        raise GraphclustError(f"unknown repulsion {repulsion!r}; expected one of {REPULSIONS}")
    return s / tau


def bernoulli_log_lik(logits: Tensor, targets: Tensor) -> Tensor:
    """Elementwise ``log Bern(h; sigmoid(logit))``, computed stably."""
    return -F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype), reduction="none")


def gaussian_log_prob(z: Tensor, mu: Tensor, log_sigma: Tensor) -> Tensor:
    """``log N(z; mu, diag(exp(2 log_sigma)))`` summed over the last dimension."""
    return (-0.5 * ((z - mu) * torch.exp(-log_sigma)).pow(2) - log_sigma
            - 0.5 * math.log(2 * math.pi)).sum(-1)


def categorical_kl(log_q: Tensor, log_p: Tensor, index: Tensor, num_groups: int) -> Tensor:
    """Per-group ``KL(q || p) = sum_j q_j (log q_j - log p_j)`` over the support of ``q``.

    Parameters
    ----------
    log_q, log_p : Tensor of shape (n,)
        Per-group normalised log-probabilities (``-inf`` outside a support); ``q``'s support
        must lie inside ``p``'s.
    index : LongTensor of shape (n,)
    num_groups : int

    Returns
    -------
    Tensor of shape (num_groups,)
    """
    on = torch.isfinite(log_q)
    diff = torch.where(on, log_q - torch.where(on, log_p, torch.zeros_like(log_p)),
                       torch.zeros_like(log_q))
    terms = torch.where(on, log_q.exp() * diff, torch.zeros_like(log_q))
    return scatter(terms, index, 0, dim_size=num_groups, reduce="sum")


def iwae_bound(log_w: Tensor) -> Tensor:
    """``log (1/S) sum_s w_s`` from log-weights of shape (S, ...)."""
    return torch.logsumexp(log_w, dim=0) - math.log(log_w.shape[0])


def eai_bound(log_w: Tensor, log_pi: Tensor) -> Tensor:
    """The EAI bound ``log sum_m pi_m (1/S) sum_s w_{m,s}``.

    Parameters
    ----------
    log_w : Tensor of shape (M + 1, S, ...)
        Log importance weights of proposal ``m`` (``m = 0``: amortised ``q``).
    log_pi : Tensor of shape (M + 1,)
        Log mixture weights (normalised).

    Returns
    -------
    Tensor of shape (...)
    """
    shape = (-1,) + (1,) * (log_w.dim() - 1)
    shifted = (log_w + log_pi.view(shape)).flatten(0, 1)
    return torch.logsumexp(shifted, dim=0) - math.log(log_w.shape[1])


def rloo_surrogate(values: Tensor, log_q: Tensor) -> Tensor:
    """REINFORCE leave-one-out surrogate over ``R`` sampled anchors.

    The value is ``mean_r A_r``; the gradient is
    ``(1/R) sum_r [grad A_r + (A_r - mean_{r' != r} A_{r'}) grad log q(I_r)]``.

    Parameters
    ----------
    values : Tensor of shape (R, B)
        ``A_r`` per sample and graph.
    log_q : Tensor of shape (R, B)
        ``log q(I_r)`` of the sampled anchors.

    Returns
    -------
    Tensor of shape (B,)
    """
    R = values.shape[0]
    if R == 1:
        return values[0]
    baseline = (values.sum(0, keepdim=True) - values) / (R - 1)
    score = (values - baseline).detach() * log_q
    return (values + score - score.detach()).mean(0)


# =========================================================================== graph pieces
class StepGraph(NamedTuple):
    """The subgraph of the nodes still unassigned at a step.

    Attributes
    ----------
    node : LongTensor of shape (n,)
        Global ids of the unassigned nodes (ascending).
    batch : LongTensor of shape (n,)
        Their graphs.
    edge_index : LongTensor of shape (2, E_k)
        Edges with both ends unassigned, in local ids (row 0 the neighbour).
    edge_attr : Tensor of shape (E_k, n_edge_features)
    """

    node: Tensor
    batch: Tensor
    edge_index: Tensor
    edge_attr: Tensor


def induced_subgraph(mask: Tensor, batch: Tensor, edge_index: Tensor,
                     edge_attr: Tensor) -> StepGraph:
    """Keep the nodes where ``mask`` is True and the edges between them (``O(E)``)."""
    node = mask.nonzero().view(-1)
    local = torch.full_like(mask, -1, dtype=torch.long)
    local[node] = torch.arange(node.numel(), device=mask.device)
    keep = mask[edge_index[0]] & mask[edge_index[1]]
    return StepGraph(node, batch[node], local[edge_index[:, keep]], edge_attr[keep])


class _TeacherForcing(NamedTuple):
    """Summaries of the true clusters of a batch, padded to ``(B, K_max, d)``."""

    n_clusters: Tensor  # (B,) K_b
    k_max: int
    G: Tensor  # G^k = sum_{l<k} g(m^l)
    mbar: Tensor  # mean unit anchor key of clusters l < k
    keys: Tensor  # W_A m^k


class _StepTerms(NamedTuple):
    """Training terms of one step for every graph."""

    log_w: Tensor  # (R, M + 1, S, B) log importance weights per sampled anchor
    log_q: Tensor  # (R, B) log q(I_r)
    kl: Tensor  # (B,) KL(q(I) || p(I))
    active: Tensor  # (B,) graphs with K_b > k


def _batch_of(data) -> tuple[Tensor, int]:
    batch = getattr(data, "batch", None)
    if batch is None:
        batch = torch.zeros(data.num_nodes, dtype=torch.long, device=data.x.device)
        return batch, 1
    return batch, int(getattr(data, "num_graphs", int(batch.max()) + 1 if batch.numel() else 1))


@dataclass
class StepFeatures:
    """Anchor-conditioned features of one step.

    Attributes
    ----------
    ebar : Tensor of shape (n, d)
        Step encodings of the unassigned nodes.
    anchor : Tensor of shape (B, d)
        Anchor embeddings ``a^k`` (zero for graphs without unassigned nodes).
    context : Tensor of shape (B, d)
        Anchor-conditioned set summary ``U_a^k``.
    batch : LongTensor of shape (n,)
    """

    ebar: Tensor
    anchor: Tensor
    context: Tensor
    batch: Tensor


@dataclass
class ElboTerms:
    """Training objective of one batch.

    Attributes
    ----------
    loss : Tensor (scalar)
        ``-mean_b (sum_k [L_k^{zh} - kl_weight KL_k]) / N_b``, to minimise.
    membership : float
        Mean over graphs of ``sum_k L_k^{zh} / N_b`` (the membership/latent bound per point).
    anchor_kl : float
        Mean over graphs of ``sum_k KL_k / N_b``.
    n_steps : int
        Cluster steps of the batch (its largest ``K``).
    """

    loss: Tensor
    membership: float
    anchor_kl: float
    n_steps: int


@dataclass
class BoundEstimates:
    """The three bounds of seed Theorem 1 per graph, divided by its number of points.

    ``amortized`` (``L``, ``M = 0``), ``svi`` (``L^Delta``: only the last inner step's
    proposal) and ``eai`` (``L^*``); all include the exact anchor ``-KL`` and use the
    same anchors and noise. Arrays of shape (B,).
    """

    amortized: np.ndarray
    svi: np.ndarray
    eai: np.ndarray


@dataclass
class Clustering:
    """Result of :func:`infer_clusters` on a batch of ``B`` graphs (``N`` nodes).

    Attributes
    ----------
    labels : ndarray of shape (N,), int64
        Cluster of every node, ``0..n_clusters[b]-1`` within its graph, in the order found.
    n_clusters : ndarray of shape (B,), int64
        ``K_hat`` per graph.
    membership : ndarray of shape (N,), float32
        ``sigmoid(l_i^k)`` of the step that assigned the node (1 for anchors); the ranking
        score of the seed's Fig. 2.
    proba : ndarray of shape (N, K_max_found), float32
        Sequential membership probabilities: ``P[i, k] = p_ik prod_{l<k} (1 - p_il)`` for the
        steps before the node was assigned, and the remaining mass on its own cluster; rows
        sum to 1, columns beyond a graph's ``n_clusters`` are 0.
    anchors : ndarray of shape (n_steps, B), int64
        Node id of each step's anchor (``-1`` once a graph is fully assigned).
    capped : ndarray of shape (B,), bool
        The ``max_clusters`` cap was reached and leftover nodes were attached to the
        nearest prototype.
    n_merged : ndarray of shape (B,), int64
        Clusters smaller than ``min_cluster_size`` merged into others.
    n_steps : int
    """

    labels: np.ndarray
    n_clusters: np.ndarray
    membership: np.ndarray
    proba: np.ndarray
    anchors: np.ndarray
    capped: np.ndarray
    n_merged: np.ndarray
    n_steps: int


# =========================================================================== modules
class ChigacEncoder(nn.Module):
    """``e_i = MLP_in(x_i)``, then ``L`` x [tokens <- PMA(e | graph); e <- MAB(e, kNN u self u tokens)].

    Parameters
    ----------
    in_dim, dim, heads, n_layers, n_tokens, hidden, dropout :
        See :class:`ChigacConfig`.
    edge_dim : int
        Edge features (log weight, scaled distance).
    """

    def __init__(self, in_dim: int, dim: int, heads: int, n_layers: int, n_tokens: int,
                 hidden: int, dropout: float, edge_dim: int = len(EDGE_FEATURES)) -> None:
        super().__init__()
        self.inp = tanh_mlp(in_dim, hidden, dim, 1, dropout)
        self.pools = nn.ModuleList(
            [SetPool(dim, heads, n_tokens, hidden, dropout) for _ in range(n_layers)]
        ) if n_tokens > 0 else None
        self.blocks = nn.ModuleList(
            [AttentionBlock(dim, heads, edge_dim, hidden, dropout) for _ in range(n_layers)]
        )

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor, batch: Tensor,
                num_graphs: int) -> Tensor:
        """Returns ``e`` of shape (N, dim)."""
        e = self.inp(x)
        for layer, block in enumerate(self.blocks):
            tokens = None if self.pools is None else self.pools[layer](e, batch, num_graphs)
            e = block(e, edge_index, edge_attr, tokens, batch)
        return e


class ChigacModel(nn.Module):
    """The CHiGac networks, objective and test-time step functions.

    Parameters
    ----------
    config : ChigacConfig
    generator : torch.Generator, optional
        CPU generator of the weight initialisation (PyTorch's default schemes).

    Notes
    -----
    Test-time inference is :func:`infer_clusters`; it only calls :meth:`encode`,
    :meth:`anchor_keys`, :meth:`prior_anchor_scores`, :meth:`join_logits` and
    :meth:`summarize_cluster`, so a subclass overriding them (e.g. an oracle) reuses the loop.
    """

    def __init__(self, config: ChigacConfig, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.config = config
        # construction draws default initial weights from PyTorch's global generator; fork it
        # so that the global state is left as it was (the weights are re-drawn just below)
        with torch.random.fork_rng(devices=[]):
            self._build(config)
        self.reset_parameters(generator)

    def _build(self, c: ChigacConfig) -> None:
        d, h, dr = c.dim, c.hidden, c.dropout
        self.encoder = ChigacEncoder(c.in_dim, d, c.heads, c.n_layers, c.n_tokens, h, dr)
        self.anchor_key = nn.Linear(d, d, bias=False)  # W_A, shared by nodes and prototypes
        self.log_tau = nn.Parameter(torch.tensor(math.log(c.tau)))
        self.cluster_pool = SetPool(d, c.heads, 1, h, dr)  # PMA_M
        self.set_pool = SetPool(d, c.heads, 1, h, dr)  # PMA_U
        self.prior_proto = tanh_mlp(2 * d, h, d, 1, dr)  # MLP_P([U, G])
        self.summary = tanh_mlp(d, h, d, 1, dr)  # g
        self.anchor_mlp = tanh_mlp(3 * d + 1, h, d, 1, dr)  # MLP_anc([e, a, e*a, |x - x_a|])
        self.step_tokens = SetPool(d, c.heads, c.n_tokens, h, dr) if c.n_tokens > 0 else None
        self.step_block = AttentionBlock(d, c.heads, len(EDGE_FEATURES), h, dr)
        self.pool_a = SetPool(d, c.heads, 1, h, dr)  # PMA_Ua
        self.pool_in = SetPool(d, c.heads, 1, h, dr)
        self.pool_out = SetPool(d, c.heads, 1, h, dr)
        self.z_prior = tanh_mlp(3 * d, h, 2 * c.latent_dim, 1, dr)  # f_theta^z([a, U_a, G])
        self.z_post = tanh_mlp(4 * d, h, 2 * c.latent_dim, 1, dr)  # f_phi^z([a, U_in, U_out, G])
        # membership head f_theta^h with a split first layer: W_e ebar_i + W_c [z, a, U_a, G]
        self.head_drop = GenDropout(dr) if dr > 0 else nn.Identity()
        self.head_node = nn.Linear(d, h)
        self.head_ctx = nn.Linear(c.latent_dim + 3 * d, h, bias=False)
        self.head_out = nn.Sequential(nn.Tanh(), *( [GenDropout(dr)] if dr > 0 else []),
                                      nn.Linear(h, h), nn.Tanh(), nn.Linear(h, 1))
        self.eai_logits = nn.Parameter(torch.zeros(c.eai_steps + 1),
                                       requires_grad=c.eai_weights == "learned")

    # ------------------------------------------------------------------ plumbing
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """(Re-)initialise every weight from ``generator`` (never the global RNG when given)."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5), generator=generator)
                if m.bias is not None:
                    bound = 1.0 / math.sqrt(m.weight.shape[1]) if m.weight.shape[1] else 0.0
                    nn.init.uniform_(m.bias, -bound, bound, generator=generator)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, SetPool):
                nn.init.normal_(m.seeds, 0.0, 1.0 / math.sqrt(m.dim), generator=generator)
        # edge bias: beta_h = 1 on log w_ij, 0 on the scaled distance
        for m in self.modules():
            lin = getattr(m, "lin_edge", None)
            if isinstance(lin, nn.Linear):
                with torch.no_grad():
                    lin.weight.zero_()
                    lin.weight[:, 0] = 1.0
        with torch.no_grad():
            self.log_tau.fill_(math.log(self.config.tau))
            self.eai_logits.zero_()

    @contextlib.contextmanager
    def random_source(self, generator: torch.Generator | None) -> Iterator[None]:
        """Draw every dropout mask from ``generator`` inside the ``with`` block."""
        drops = [m for m in self.modules() if isinstance(m, GenDropout)]
        for m in drops:
            m.generator = generator
        try:
            yield
        finally:
            for m in drops:
                m.generator = None

    @property
    def tau(self) -> Tensor:
        return self.log_tau.exp().clamp(0.01, 1.0)

    def log_pi(self) -> Tensor:
        """Log mixture weights of the ``M + 1`` EAI proposals."""
        return torch.log_softmax(self.eai_logits, 0)

    # ------------------------------------------------------------------ encoder & anchors
    def encode(self, data) -> Tensor:
        """Static node embeddings ``e`` of shape (N, d) of a ``Data``/``Batch``."""
        batch, B = _batch_of(data)
        return self.encoder(data.x, data.edge_index, data.edge_attr, batch, B)

    def anchor_keys(self, e: Tensor) -> Tensor:
        """``e_hat = W_A e``."""
        return self.anchor_key(e)

    def cluster_summaries(self, e: Tensor, group: Tensor, num_groups: int) -> Tensor:
        """``m = PMA_M(e | group)`` of shape (num_groups, d)."""
        return self.cluster_pool(e, group, num_groups)[:, 0]

    def prior_prototype(self, e_s: Tensor, batch_s: Tensor, G: Tensor) -> Tensor:
        """``m_tilde = MLP_P([PMA_U(e | S^k), G^k])`` of shape (B, d)."""
        U = self.set_pool(e_s, batch_s, G.shape[0])[:, 0]
        return self.prior_proto(torch.cat([U, G], -1))

    def prior_anchor_scores(self, e_s: Tensor, ehat_s: Tensor, sub: StepGraph, G: Tensor,
                            mbar: Tensor) -> Tensor:
        """Logits of ``p(I^k | C_{<k}, S^k)`` on the unassigned nodes, shape (n,)."""
        if self.config.anchor_prior == "uniform":
            return torch.zeros(e_s.shape[0], device=e_s.device, dtype=e_s.dtype)
        proto = self.anchor_key(self.prior_prototype(e_s, sub.batch, G))
        c = self.config
        return anchor_scores(ehat_s, proto[sub.batch], mbar[sub.batch], self.tau, c.repulsion,
                             c.lambda_rep)

    # ------------------------------------------------------------------ one step
    def step_features(self, sub: StepGraph, e_s: Tensor, x_s: Tensor, select: Tensor,
                      G: Tensor) -> StepFeatures:
        """Anchor-conditioned encodings of the unassigned nodes (design note 1.5).

        Parameters
        ----------
        sub : StepGraph
        e_s, x_s : Tensor of shape (n, d), (n, D)
            Embeddings and (standardised) inputs of the unassigned nodes.
        select : Tensor of shape (n,)
            Anchor selection weights: one-hot per graph (or straight-through Gumbel).
        G : Tensor of shape (B, d)
        """
        B = G.shape[0]
        a = scatter(select.unsqueeze(-1) * e_s, sub.batch, 0, dim_size=B, reduce="sum")
        xa = scatter(select.unsqueeze(-1) * x_s, sub.batch, 0, dim_size=B, reduce="sum")
        dist = (x_s - xa[sub.batch]).norm(dim=-1, keepdim=True)
        ab = a[sub.batch]
        et = self.anchor_mlp(torch.cat([e_s, ab, e_s * ab, dist], -1))
        tokens = torch.stack([a, G], 1)  # the two step tokens
        if self.step_tokens is not None:
            tokens = torch.cat([self.step_tokens(et, sub.batch, B), tokens], 1)
        eb = self.step_block(et, sub.edge_index, sub.edge_attr, tokens, sub.batch)
        U_a = self.pool_a(eb, sub.batch, B)[:, 0]
        return StepFeatures(eb, a, U_a, sub.batch)

    def z_prior_params(self, feat: StepFeatures, G: Tensor) -> tuple[Tensor, Tensor]:
        """``(mu_p, log_sigma_p)`` of ``p(z^k | S_I)``, each (B, d_z)."""
        mu, ls = self.z_prior(torch.cat([feat.anchor, feat.context, G], -1)).chunk(2, -1)
        return mu, ls.clamp(*_LOG_SIGMA)

    def z_posterior_params(self, feat: StepFeatures, members: Tensor, others: Tensor,
                           G: Tensor) -> tuple[Tensor, Tensor]:
        """``(mu_q, log_sigma_q)`` of ``q(z^k | h, S_I)`` from the members/non-members pools."""
        B = G.shape[0]
        U_in = self.pool_in(feat.ebar, feat.batch, B, members)[:, 0]
        U_out = self.pool_out(feat.ebar, feat.batch, B, others)[:, 0]
        mu, ls = self.z_post(torch.cat([feat.anchor, U_in, U_out, G], -1)).chunk(2, -1)
        return mu, ls.clamp(*_LOG_SIGMA)

    def membership_logits(self, feat: StepFeatures, z: Tensor, G: Tensor) -> Tensor:
        """Membership logits ``l_i^k`` for ``S`` latent samples.

        Parameters
        ----------
        feat : StepFeatures
        z : Tensor of shape (S, B, d_z)
        G : Tensor of shape (B, d)

        Returns
        -------
        Tensor of shape (S, n)
        """
        S = z.shape[0]
        node = self.head_node(self.head_drop(feat.ebar))  # (n, h)
        ctx = torch.cat([z, feat.anchor.expand(S, -1, -1), feat.context.expand(S, -1, -1),
                         G.expand(S, -1, -1)], -1)
        hid = node.unsqueeze(0) + self.head_ctx(ctx)[:, feat.batch]
        return self.head_out(hid).squeeze(-1)

    def join_logits(self, e_s: Tensor, x_s: Tensor, sub: StepGraph, anchor: Tensor,
                    G: Tensor, refine_steps: int = 0) -> Tensor:
        """Test-time membership logits, shape (n,).

        ``anchor`` (B,) holds local anchor indices (``-1``: graph without unassigned nodes).
        The first pass uses ``z = mu_p``, the prior mean given the anchor. Each of up to
        ``refine_steps`` further passes sets ``z`` to the posterior mean ``mu_q`` given the
        members and non-members that the previous pass found, which is how the membership head
        sees ``z`` in training (drawn from ``q`` given the true members); the passes stop
        early once the memberships no longer change.
        """
        select = torch.zeros(e_s.shape[0], device=e_s.device, dtype=e_s.dtype)
        ok = anchor >= 0
        select[anchor[ok]] = 1.0
        feat = self.step_features(sub, e_s, x_s, select, G)
        mu_p, _ = self.z_prior_params(feat, G)
        logits = self.membership_logits(feat, mu_p.unsqueeze(0), G)[0]
        nonanchor = select == 0
        for _ in range(refine_steps):
            members = (logits > 0) & nonanchor
            mu_q, _ = self.z_posterior_params(feat, members, nonanchor & ~members, G)
            new = self.membership_logits(feat, mu_q.unsqueeze(0), G)[0]
            stable = torch.equal(new > 0, logits > 0)
            logits = new
            if stable:
                break
        return logits

    def summarize_cluster(self, e_c: Tensor, batch_c: Tensor, num_graphs: int) -> tuple[Tensor, Tensor]:
        """``(g(m^k), W_A m^k)`` of the clusters just formed, each (B, d)."""
        m = self.cluster_summaries(e_c, batch_c, num_graphs)
        return self.summary(m), self.anchor_key(m)

    # ------------------------------------------------------------------ training objective
    def _log_weights(self, feat: StepFeatures, members: Tensor, nonanchor: Tensor, G: Tensor,
                     eai_steps: int, generator: torch.Generator | None) -> Tensor:
        """Log importance weights ``log p(h, z) - log q_m(z)`` of shape (M + 1, S, B)."""
        c = self.config
        B, S, dz = G.shape[0], c.n_z_samples, c.latent_dim
        others = nonanchor & ~members
        mu_p, ls_p = self.z_prior_params(feat, G)
        mu_q, ls_q = self.z_posterior_params(feat, members, others, G)
        h = members.to(feat.ebar.dtype)
        weight = nonanchor.to(feat.ebar.dtype)

        def log_joint(z: Tensor, f: StepFeatures, mp: Tensor, lp: Tensor, GG: Tensor) -> Tensor:
            logits = self.membership_logits(f, z, GG)  # (S', n)
            ll = scatter(bernoulli_log_lik(logits, h.expand_as(logits)) * weight, f.batch, 1,
                         dim_size=B, reduce="sum")
            return ll + gaussian_log_prob(z, mp, lp)

        def draw(mu: Tensor, ls: Tensor, n: int) -> Tensor:
            eps = torch.randn((n, B, dz), generator=generator, device=mu.device, dtype=mu.dtype)
            return mu + ls.exp() * eps

        z0 = draw(mu_q, ls_q, S)
        out = [log_joint(z0, feat, mu_p, ls_p, G) - gaussian_log_prob(z0, mu_q, ls_q)]
        if eai_steps > 0:
            # first-order inner SVI on (mu_q, log sigma_q) with detached conditioning
            fd = StepFeatures(feat.ebar.detach(), feat.anchor.detach(), feat.context.detach(),
                              feat.batch)
            Gd, mpd, lpd = G.detach(), mu_p.detach(), ls_p.detach()
            lam_mu, lam_ls = mu_q.detach(), ls_q.detach()
            for _ in range(eai_steps):
                with torch.enable_grad():
                    lm = lam_mu.clone().requires_grad_(True)
                    ll_ = lam_ls.clone().requires_grad_(True)
                    z = draw(lm, ll_, 1)
                    elbo = (log_joint(z, fd, mpd, lpd, Gd) - gaussian_log_prob(z, lm, ll_)).sum()
                    g_mu, g_ls = torch.autograd.grad(elbo, [lm, ll_])
                norm = torch.cat([g_mu, g_ls], -1).norm(dim=-1, keepdim=True)
                factor = (c.eai_clip / norm.clamp_min(1e-12)).clamp(max=1.0)
                lam_mu = (lam_mu + c.eai_lr * factor * g_mu).detach()
                lam_ls = (lam_ls + c.eai_lr * factor * g_ls).clamp(*_LOG_SIGMA).detach()
                mu_m = mu_q + (lam_mu - mu_q).detach()
                ls_m = ls_q + (lam_ls - ls_q).detach()
                zm = draw(mu_m, ls_m, S)
                out.append(log_joint(zm, feat, mu_p, ls_p, G) - gaussian_log_prob(zm, mu_m, ls_m))
        return torch.stack(out)

    def _teacher_forcing(self, e: Tensor, y: Tensor, batch: Tensor, B: int) -> _TeacherForcing:
        """Per-graph summaries of the true clusters: ``G^k``, ``mbar^k`` and ``W_A m^k``."""
        K_b = scatter(y, batch, 0, dim_size=B, reduce="max") + 1
        K_b = torch.where(torch.bincount(batch, minlength=B) > 0, K_b, torch.zeros_like(K_b))
        offset = torch.cumsum(K_b, 0) - K_b
        n_groups = int(K_b.sum())
        m_all = self.cluster_summaries(e, offset[batch] + y, n_groups)
        g_all, key_all = self.summary(m_all), self.anchor_key(m_all)
        unit_all = F.normalize(key_all, dim=-1)
        cl_graph = torch.repeat_interleave(torch.arange(B, device=e.device), K_b)
        cl_k = torch.arange(n_groups, device=e.device) - offset[cl_graph]
        K_max = int(K_b.max()) if B else 0
        d = e.shape[1]

        def pad(t: Tensor) -> Tensor:
            return torch.zeros(B, K_max, d, device=e.device, dtype=t.dtype).index_put(
                (cl_graph, cl_k), t)

        g_pad, unit_pad = pad(g_all), pad(unit_all)
        G_excl = torch.cumsum(g_pad, 1) - g_pad
        counts = torch.arange(K_max, device=e.device).clamp_min(1).view(1, -1, 1)
        mbar = (torch.cumsum(unit_pad, 1) - unit_pad) / counts
        return _TeacherForcing(K_b, K_max, G_excl, mbar, pad(key_all))

    def _sample_anchor(self, s_q: Tensor, in_c: Tensor, batch_s: Tensor, B: int,
                       generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        """Draw one anchor per graph from ``q``; returns (local index (B,), selection (n,))."""
        u = torch.rand(s_q.shape, generator=generator, device=s_q.device, dtype=s_q.dtype)
        gumbel = -torch.log(-torch.log(u.clamp(1e-10, 1 - 1e-10)))
        noisy = s_q + gumbel
        anchor = group_argmax(noisy, batch_s, B, in_c)
        hard = torch.zeros_like(s_q)
        hard[anchor[anchor >= 0]] = 1.0
        if self.config.anchor_grad != "gumbel":
            return anchor, hard
        soft = torch.exp(masked_log_softmax(noisy, batch_s, B, in_c))
        return anchor, hard - soft.detach() + soft

    def _step_terms(self, e: Tensor, ehat: Tensor, data, batch: Tensor, B: int, k: int,
                    tf: _TeacherForcing, generator: torch.Generator | None, eai_steps: int,
                    n_anchors: int | None = None) -> _StepTerms:
        """Per-graph log weights (R, M+1, S, B), anchor log q (R, B) and KL (B,) of step ``k``."""
        c = self.config
        y = data.y
        unassigned = y >= k
        sub = induced_subgraph(unassigned, batch, data.edge_index, data.edge_attr)
        e_s, ehat_s, x_s = e[sub.node], ehat[sub.node], data.x[sub.node]
        in_c = y[sub.node] == k
        G, mbar = tf.G[:, k], tf.mbar[:, k]
        s_q = anchor_scores(ehat_s, tf.keys[:, k][sub.batch], mbar[sub.batch], self.tau,
                            c.repulsion, c.lambda_rep)
        log_q = masked_log_softmax(s_q, sub.batch, B, in_c)
        log_p = masked_log_softmax(self.prior_anchor_scores(e_s, ehat_s, sub, G, mbar),
                                   sub.batch, B)
        kl = categorical_kl(log_q, log_p, sub.batch, B)
        R = 1 if c.anchor_grad == "gumbel" else c.n_anchor_samples
        R = R if n_anchors is None else n_anchors
        log_ws, log_qs = [], []
        for _ in range(R):
            anchor, select = self._sample_anchor(s_q.detach() if c.anchor_grad != "gumbel" else s_q,
                                                 in_c, sub.batch, B, generator)
            nonanchor = torch.ones_like(in_c)
            nonanchor[anchor[anchor >= 0]] = False
            feat = self.step_features(sub, e_s, x_s, select, G)
            log_ws.append(self._log_weights(feat, in_c & nonanchor, nonanchor, G, eai_steps,
                                            generator))
            ok = anchor >= 0
            log_qs.append(torch.where(ok, log_q[anchor.clamp_min(0)], torch.zeros_like(kl)))
        return _StepTerms(torch.stack(log_ws), torch.stack(log_qs), kl, tf.n_clusters > k)

    def loss(self, data, generator: torch.Generator | None = None) -> ElboTerms:
        """The training objective on a labelled batch (teacher forcing, design note 1.9).

        Parameters
        ----------
        data : torch_geometric Data or Batch
            ``x``, ``edge_index``, ``edge_attr``, ``y`` (clusters in order ``0..K_b-1``
            per graph), ``batch``.
        generator : torch.Generator, optional
            Source of the anchor, latent and dropout noise (on the data's device).

        Returns
        -------
        ElboTerms
        """
        c = self.config
        if getattr(data, "y", None) is None:
            raise GraphclustError("training needs data.y, the true clusters of every graph")
        batch, B = _batch_of(data)
        n_per = torch.bincount(batch, minlength=B).clamp_min(1).to(data.x.dtype)
        with self.random_source(generator):
            e = self.encode(data)
            ehat = self.anchor_key(e)
            tf = self._teacher_forcing(e, data.y, batch, B)
            K_max = tf.k_max
            log_pi = self.log_pi()
            total = torch.zeros(B, device=e.device, dtype=e.dtype)
            memb = torch.zeros_like(total)
            kls = torch.zeros_like(total)
            for k in range(K_max):
                st = self._step_terms(e, ehat, data, batch, B, k, tf, generator, c.eai_steps)
                kl, active = st.kl, st.active
                values = torch.stack([eai_bound(lw, log_pi) for lw in st.log_w])  # (R, B)
                if c.anchor_grad == "rloo":
                    term = rloo_surrogate(values, st.log_q)
                else:
                    term = values.mean(0)
                zero = torch.zeros_like(term)
                total = total + torch.where(active, term - c.kl_weight * kl, zero)
                memb = memb + torch.where(active, values.mean(0), zero).detach()
                kls = kls + torch.where(active, kl, zero).detach()
        loss = -(total / n_per).mean()
        return ElboTerms(loss, float((memb / n_per).mean()), float((kls / n_per).mean()), K_max)

    @torch.no_grad()
    def bounds(self, data, generator: torch.Generator | None = None,
               eai_steps: int | None = None) -> BoundEstimates:
        """``L``, ``L^Delta`` and ``L^*`` of seed Theorem 1 per graph (test S2).

        One anchor per step drawn from ``q``; all three bounds share it and the noise.
        ``eai_steps`` overrides the configured ``M`` (must be >= 1 for ``L^Delta`` to differ).
        """
        M = self.config.eai_steps if eai_steps is None else int(eai_steps)
        batch, B = _batch_of(data)
        n_per = torch.bincount(batch, minlength=B).clamp_min(1).to(data.x.dtype)
        was = self.training
        self.eval()
        try:
            e = self.encode(data)
            ehat = self.anchor_key(e)
            tf = self._teacher_forcing(e, data.y, batch, B)
            log_pi = torch.full((M + 1,), -math.log(M + 1), device=e.device)
            sums = torch.zeros(3, B, device=e.device)
            for k in range(tf.k_max):
                st = self._step_terms(e, ehat, data, batch, B, k, tf, generator, M, n_anchors=1)
                lw = st.log_w[0]
                vals = torch.stack([iwae_bound(lw[0]), iwae_bound(lw[-1]), eai_bound(lw, log_pi)])
                sums += torch.where(st.active, vals - st.kl, torch.zeros_like(vals))
        finally:
            self.train(was)
        out = (sums / n_per).cpu().numpy()
        return BoundEstimates(out[0], out[1], out[2])


# =========================================================================== inference
def check_min_cluster_size(value: Any) -> int | float:
    """Validate ``min_cluster_size``: an integer >= 1 (points) or a float in (0, 1) (share).

    Returns the value as ``int`` or ``float``; anything else raises :class:`GraphclustError`.
    """
    if isinstance(value, bool):
        pass
    elif isinstance(value, (int, np.integer)) and value >= 1:
        return int(value)
    elif isinstance(value, (float, np.floating)) and 0.0 < value < 1.0:
        return float(value)
    raise GraphclustError(
        f"min_cluster_size must be an integer >= 1 (a number of points) or a float in (0, 1) "
        f"(a share of each data set's points), got {value!r}"
    )


def min_size_for(min_cluster_size: float, n_nodes: int) -> int:
    """The smallest cluster kept in a graph of ``n_nodes`` points.

    An integer is taken as it is; a share ``f`` in (0, 1) becomes ``ceil(f * n_nodes)``
    (at least 1), so the threshold grows with the data set, as the few-point edge groups
    that the merge is meant for do.
    """
    m = check_min_cluster_size(min_cluster_size)
    return m if isinstance(m, int) else max(1, math.ceil(m * n_nodes))


def _check_inference_args(max_clusters: int, min_cluster_size: float,
                          refine_steps: int = 0) -> None:
    for name, v, low in (("max_clusters", max_clusters, 1), ("refine_steps", refine_steps, 0)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
            raise GraphclustError(f"{name} must be an integer >= {low}, got {v!r}")
    check_min_cluster_size(min_cluster_size)


@torch.no_grad()
def infer_clusters(model: ChigacModel, data, max_clusters: int = 100,
                   min_cluster_size: float = 1,
                   sample_anchors: bool = False,
                   generator: torch.Generator | None = None,
                   refine_steps: int = 0) -> Clustering:
    """Cluster every graph of ``data`` with a trained model (design note section 5).

    The loop runs while any node is unassigned and fewer than ``max_clusters`` steps were
    taken; each step picks one anchor per graph (argmax of the prior anchor scores, or a
    sample), thresholds the memberships at 0.5 with ``z = mu_p``, and updates the running
    summary. Leftover nodes after the cap join the nearest prototype (cosine of anchor
    keys) and the graph is reported as ``capped``; clusters smaller than
    ``min_cluster_size`` are then merged into the nearest larger one.

    Parameters
    ----------
    model : ChigacModel
        Put in eval mode for the call.
    data : torch_geometric Data or Batch
        ``x`` (standardised), ``edge_index``, ``edge_attr`` (and ``batch``).
    max_clusters : int
        The cap ``K_max``.
    min_cluster_size : int or float
        Clusters with fewer points are merged; a float in (0, 1) is a share of each graph's
        points (:func:`min_size_for`). 1 disables merging.
    sample_anchors : bool
        Sample anchors from ``p(I^k)`` instead of the argmax (needs ``generator`` for
        reproducibility).
    generator : torch.Generator, optional
    refine_steps : int
        Passes of the membership head with ``z`` at the posterior mean given the previous
        pass's members (:meth:`ChigacModel.join_logits`); 0 keeps ``z = mu_p``.

    Returns
    -------
    Clustering
    """
    _check_inference_args(max_clusters, min_cluster_size, refine_steps)
    was = model.training
    model.eval()
    try:
        return _infer(model, data, int(max_clusters), min_cluster_size, sample_anchors,
                      generator, int(refine_steps))
    finally:
        model.train(was)


def _infer(model, data, max_clusters, min_cluster_size, sample_anchors, generator,
           refine_steps=0) -> Clustering:
    batch, B = _batch_of(data)
    N = data.num_nodes
    dev = data.x.device
    e = model.encode(data)
    ehat = model.anchor_keys(e)
    d = e.shape[1]
    unassigned = torch.ones(N, dtype=torch.bool, device=dev)
    labels = torch.full((N,), -1, dtype=torch.long, device=dev)
    membership = torch.zeros(N, device=dev)
    remaining = torch.ones(N, device=dev)
    G = torch.zeros(B, d, device=dev)
    unit_sum = torch.zeros(B, d, device=dev)
    n_found = torch.zeros(B, device=dev)
    protos: list[Tensor] = []  # W_A m^k per step, (B, d)
    proba_cols: list[tuple[Tensor, Tensor]] = []  # (node ids, P[i, k]) per step
    anchors: list[Tensor] = []
    k = 0
    while k < max_clusters and bool(unassigned.any()):
        sub = induced_subgraph(unassigned, batch, data.edge_index, data.edge_attr)
        e_s, ehat_s, x_s = e[sub.node], ehat[sub.node], data.x[sub.node]
        mbar = unit_sum / n_found.clamp_min(1).unsqueeze(-1)
        scores = model.prior_anchor_scores(e_s, ehat_s, sub, G, mbar)
        if sample_anchors:
            u = torch.rand(scores.shape, generator=generator, device=dev)
            scores = scores - torch.log(-torch.log(u.clamp(1e-10, 1 - 1e-10)))
        anchor = group_argmax(scores, sub.batch, B)  # (B,), -1 for finished graphs
        active = anchor >= 0
        logits = model.join_logits(e_s, x_s, sub, anchor, G, refine_steps)
        p = torch.sigmoid(logits)
        is_anchor = torch.zeros_like(p, dtype=torch.bool)
        is_anchor[anchor[active]] = True
        p = torch.where(is_anchor, torch.ones_like(p), p)
        take = is_anchor | (p > 0.5)
        nodes = sub.node
        labels[nodes[take]] = k
        membership[nodes[take]] = p[take]
        rem = remaining[nodes]
        proba_cols.append((nodes, torch.where(take, rem, rem * p)))
        remaining[nodes] = torch.where(take, torch.zeros_like(rem), rem * (1 - p))
        unassigned[nodes[take]] = False
        g, key = model.summarize_cluster(e_s[take], sub.batch[take], B)
        act = active.to(G.dtype).unsqueeze(-1)
        G = G + act * g
        unit_sum = unit_sum + act * F.normalize(key, dim=-1)
        n_found = n_found + active.to(n_found.dtype)
        protos.append(key)
        anchors.append(torch.where(active, nodes[anchor.clamp_min(0)], torch.full_like(anchor, -1)))
        k += 1

    n_steps = k
    capped = torch.zeros(B, dtype=torch.bool, device=dev)
    P = torch.zeros(N, max(n_steps, 1), device=dev)
    for step, (nodes, vals) in enumerate(proba_cols):
        P[nodes, step] = vals
    if bool(unassigned.any()):
        left = unassigned.nonzero().view(-1)
        bl = batch[left]
        capped[bl] = True
        keys = F.normalize(torch.stack(protos, 1), dim=-1)  # (B, K, d)
        cos = torch.einsum("nd,nkd->nk", F.normalize(ehat[left], dim=-1), keys[bl])
        # only prototypes of clusters that exist in the node's graph
        exists = torch.stack([(labels[batch == b].unsqueeze(1)
                               == torch.arange(n_steps, device=dev)).any(0) for b in range(B)])
        cos = torch.where(exists[bl], cos, torch.full_like(cos, float("-inf")))
        best = cos.argmax(1)
        labels[left] = best
        membership[left] = 0.0
        P[left, best] += remaining[left]

    labels_np = labels.cpu().numpy()
    batch_np = batch.cpu().numpy()
    P_np = P.cpu().numpy()
    n_merged = np.zeros(B, dtype=np.int64)
    if min_cluster_size != 1 and n_steps > 0:
        keys_np = F.normalize(torch.stack(protos, 1), dim=-1).cpu().numpy()
        eh_np = F.normalize(ehat, dim=-1).cpu().numpy()
        for b in range(B):
            sel = np.flatnonzero(batch_np == b)
            min_size = min_size_for(min_cluster_size, sel.size)
            if min_size > 1:
                n_merged[b] = _merge_small(labels_np, P_np, sel, keys_np[b], eh_np, min_size)
    n_clusters = np.zeros(B, dtype=np.int64)
    for b in range(B):
        sel = np.flatnonzero(batch_np == b)
        if sel.size:
            n_clusters[b] = np.unique(labels_np[sel]).size
    K_out = int(n_clusters.max()) if B else 0
    return Clustering(
        labels=labels_np.astype(np.int64),
        n_clusters=n_clusters,
        membership=membership.cpu().numpy().astype(np.float32),
        proba=np.ascontiguousarray(P_np[:, :max(K_out, 1)], dtype=np.float32),
        anchors=(torch.stack(anchors).cpu().numpy() if anchors
                 else np.zeros((0, B), dtype=np.int64)),
        capped=capped.cpu().numpy(),
        n_merged=n_merged,
        n_steps=n_steps,
    )


def _merge_small(labels: np.ndarray, P: np.ndarray, sel: np.ndarray, keys: np.ndarray,
                 ehat: np.ndarray, min_size: int) -> int:
    """Merge clusters of one graph smaller than ``min_size`` into the nearest kept prototype.

    Works in place on ``labels[sel]`` and ``P[sel]``; clusters are renumbered ``0..K'-1`` in
    their original order. Returns the number of clusters merged.
    """
    lab = labels[sel]
    ids, counts = np.unique(lab, return_counts=True)
    small = ids[counts < min_size]
    keep = ids[counts >= min_size]
    if small.size == 0 or keep.size == 0:
        return 0
    Pg = P[sel]
    for c in small:
        rows = np.flatnonzero(lab == c)
        cos = ehat[sel[rows]] @ keys[keep].T
        lab[rows] = keep[np.argmax(cos, axis=1)]
        # move the small cluster's column mass to the cluster each node went to
        Pg[rows, lab[rows]] += Pg[rows, c]
        Pg[:, c] = 0.0
    new_ids = {int(c): i for i, c in enumerate(keep)}
    remapped = np.array([new_ids[int(c)] for c in lab], dtype=np.int64)
    newP = np.zeros_like(Pg)
    newP[:, : keep.size] = Pg[:, keep]
    labels[sel] = remapped
    P[sel] = newP
    return int(small.size)

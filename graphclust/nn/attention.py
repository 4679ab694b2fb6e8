"""Multi-head attention on kNN graphs plus a few global tokens (CHiGac design note, sections 1.2-1.3, 2).

The seed's block (supplementary eq. 2) is ``MHA(A, B) = [O_1, ..., O_H] W^O`` with
``O_h = softmax(A W_h^Q (B W_h^K)^T / sqrt(d_h)) B W_h^V``. Here every query row is a node
``i`` and its keys are restricted to

- its graph neighbours ``j`` (edges ``j -> i``, PyG's ``source_to_target`` flow), with an
  additive per-head logit bias computed from edge features (``beta_h log w_ij + ...``),
- itself (a self-loop, bias 0),
- the ``T`` tokens of its own graph (bias 0),

and one softmax runs over that joint key set (the BigBird pattern). With ``J = N - 1``
neighbours and no tokens it is exactly the dense set attention (see :func:`dense_attention`,
the reference the tests compare with).

Pieces:

===========================  ================================================================
:class:`KnnTokenAttention`   the attention itself: a ``MessagePassing`` over the graph edges
                             (``edge_update(q_i, k_j, bias)`` -> logits, ``message(v_j, alpha)``)
                             and a dense ``(n_nodes, T)`` part for the graph's tokens
:class:`AttentionBlock`      Set-Transformer MAB: ``Y = LN(A W^Q + MHA)``, ``LN(Y + FF(Y))``
:class:`SetPool`             PMA: ``T`` learned seeds attend to the nodes of each group
                             (graph, cluster, ...) -> ``(n_groups, T, dim)``
:func:`masked_softmax`       per-group softmax over unmasked entries (zeros for empty groups)
:func:`group_argmax`         per-group argmax over unmasked entries (``-1`` for empty groups)
===========================  ================================================================

Token keys are handled as a small dense block per node rather than as ``N * T`` virtual
edges: the same arithmetic, without an ``O(N T d)`` edge list.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch_geometric.nn import MessagePassing
from torch_geometric.utils import remove_self_loops, scatter

from graphclust.utils import GraphclustError

__all__ = [
    "AttentionBlock",
    "GenDropout",
    "KnnTokenAttention",
    "SetPool",
    "dense_attention",
    "group_amax",
    "group_argmax",
    "masked_log_softmax",
    "masked_softmax",
    "tanh_mlp",
]


# --------------------------------------------------------------------------- helpers
class GenDropout(nn.Module):
    """Dropout that draws its mask from ``self.generator`` when one is set.

    ``nn.Dropout`` always uses PyTorch's global generator; training runs that must be
    reproducible (and resumable bit for bit) set a local generator on every
    ``GenDropout`` of a model for the duration of a step instead.
    """

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise GraphclustError(f"dropout must lie in [0, 1), got {p}")
        self.p = float(p)
        self.generator: torch.Generator | None = None

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = torch.rand(x.shape, generator=self.generator, device=x.device, dtype=x.dtype)
        return x * (keep >= self.p).to(x.dtype) / (1.0 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def tanh_mlp(in_dim: int, hidden: int, out_dim: int, n_hidden: int = 1,
             dropout: float = 0.0) -> nn.Sequential:
    """``n_hidden`` tanh layers of width ``hidden`` and a linear output layer.

    Dropout is applied to the input of every hidden ``Linear`` and never before the
    output ``Linear`` (the seed's "dropout before every layer except the last").
    """
    layers: list[nn.Module] = []
    d = in_dim
    for _ in range(n_hidden):
        if dropout > 0:
            layers.append(GenDropout(dropout))
        layers += [nn.Linear(d, hidden), nn.Tanh()]
        d = hidden
    layers.append(nn.Linear(d, out_dim))
    return nn.Sequential(*layers)


def group_amax(src: Tensor, index: Tensor, num_groups: int) -> Tensor:
    """Per-group maximum along dim 0; ``-inf`` for groups without entries.

    Parameters
    ----------
    src : Tensor of shape (n, *rest)
    index : LongTensor of shape (n,)
        Group of each row in ``[0, num_groups)``.
    """
    out = src.new_full((num_groups, *src.shape[1:]), float("-inf"))
    idx = index.view(-1, *([1] * (src.dim() - 1))).expand_as(src)
    return out.scatter_reduce(0, idx, src, reduce="amax", include_self=True)


def masked_log_softmax(scores: Tensor, index: Tensor, num_groups: int,
                       mask: Tensor | None = None) -> Tensor:
    """Per-group log-softmax of ``scores`` over the entries where ``mask`` is True.

    Masked entries get ``-inf``; a group with no unmasked entry gets ``-inf`` everywhere
    (never NaN).

    Parameters
    ----------
    scores : Tensor of shape (n,)
    index : LongTensor of shape (n,)
        Group (graph) of each entry.
    num_groups : int
    mask : BoolTensor of shape (n,), optional
        Entries that take part (default: all).
    """
    neg_inf = torch.full_like(scores, float("-inf"))
    s = scores if mask is None else torch.where(mask, scores, neg_inf)
    m = group_amax(s.detach(), index, num_groups)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    shifted = s - m[index]
    ex = shifted.exp()  # exp(-inf) = 0 for masked entries
    z = scatter(ex, index, 0, dim_size=num_groups, reduce="sum")
    log_z = torch.where(z > 0, z, torch.ones_like(z)).log()
    out = shifted - log_z[index]
    return torch.where(torch.isfinite(s), out, neg_inf)


def masked_softmax(scores: Tensor, index: Tensor, num_groups: int,
                   mask: Tensor | None = None) -> Tensor:
    """Per-group softmax over unmasked entries: zeros where masked and for empty groups.

    See :func:`masked_log_softmax` for the arguments.
    """
    return masked_log_softmax(scores, index, num_groups, mask).exp()


def group_argmax(scores: Tensor, index: Tensor, num_groups: int,
                 mask: Tensor | None = None) -> Tensor:
    """Index (into ``scores``) of the largest unmasked entry of every group.

    Ties go to the smallest index. Groups without an unmasked entry get ``-1``.

    Returns
    -------
    LongTensor of shape (num_groups,)
    """
    n = scores.shape[0]
    s = scores.detach()
    if mask is not None:
        s = torch.where(mask, s, torch.full_like(s, float("-inf")))
    m = group_amax(s, index, num_groups)
    is_max = (s == m[index]) & torch.isfinite(s)
    pos = torch.where(is_max, torch.arange(n, device=s.device), torch.full_like(index, n))
    best = torch.full((num_groups,), n, dtype=torch.long, device=s.device)
    best = best.scatter_reduce(0, index, pos, reduce="amin", include_self=True)
    return torch.where(best < n, best, torch.full_like(best, -1))


# --------------------------------------------------------------------------- attention
class KnnTokenAttention(MessagePassing):
    """Multi-head scaled dot-product attention over graph neighbours, self and graph tokens.

    For query node ``i`` the key set is ``{j : (j -> i) in edge_index} u {i} u tokens(b(i))``;
    the logits are ``<q_i, k_j>_h / sqrt(d_h) + bias_ij,h`` with ``bias = edge_attr @ W_b``
    on graph edges and 0 on the self-loop and the tokens; one softmax over the joint set.

    Parameters
    ----------
    dim : int
        Model width ``d`` (queries, keys, values and output).
    heads : int
        Number of heads ``H``; ``dim`` must be divisible by it.
    edge_dim : int
        Number of edge features turned into a per-head logit bias (0: no bias).
    self_loops : bool
        Add the ``i -> i`` key (recommended: the key set is then never empty).
    """

    def __init__(self, dim: int, heads: int = 4, edge_dim: int = 0, self_loops: bool = True) -> None:
        super().__init__(aggr="add", node_dim=0)
        if dim % heads:
            raise GraphclustError(f"dim={dim} must be divisible by heads={heads}")
        self.dim, self.heads, self.head_dim = dim, heads, dim // heads
        self.self_loops = self_loops
        self.lin_q = nn.Linear(dim, dim, bias=False)
        self.lin_k = nn.Linear(dim, dim, bias=False)
        self.lin_v = nn.Linear(dim, dim, bias=False)
        self.lin_o = nn.Linear(dim, dim)
        self.lin_edge = nn.Linear(edge_dim, heads, bias=False) if edge_dim > 0 else None
        self.scale = 1.0 / math.sqrt(self.head_dim)

    def _split(self, t: Tensor) -> Tensor:
        return t.view(*t.shape[:-1], self.heads, self.head_dim)

    def forward(
        self,
        x: Tensor,
        edge_index: Tensor,
        edge_attr: Tensor | None = None,
        tokens: Tensor | None = None,
        batch: Tensor | None = None,
    ) -> Tensor:
        """Attend.

        Parameters
        ----------
        x : Tensor of shape (n_nodes, dim)
        edge_index : LongTensor of shape (2, n_edges)
            Row 0 the neighbour ``j`` (key), row 1 the node ``i`` (query).
        edge_attr : Tensor of shape (n_edges, edge_dim), optional
            Edge features for the logit bias (required when ``edge_dim > 0``).
        tokens : Tensor of shape (n_graphs, n_tokens, dim), optional
            Global keys/values of each graph.
        batch : LongTensor of shape (n_nodes,), optional
            Graph of each node (default: all in graph 0).

        Returns
        -------
        Tensor of shape (n_nodes, dim)
        """
        n = x.shape[0]
        if batch is None:
            batch = torch.zeros(n, dtype=torch.long, device=x.device)
        bias = None
        if self.lin_edge is not None:
            if edge_attr is None:
                raise GraphclustError("this attention layer needs edge_attr (n_edges, edge_dim)")
            bias = self.lin_edge(edge_attr)
        if self.self_loops:
            edge_index, bias = remove_self_loops(edge_index, bias)
            loop = torch.arange(n, device=x.device)
            edge_index = torch.cat([edge_index, torch.stack([loop, loop])], dim=1)
            if bias is not None:
                bias = torch.cat([bias, bias.new_zeros(n, self.heads)])
        q = self._split(self.lin_q(x))
        k = self._split(self.lin_k(x))
        v = self._split(self.lin_v(x))
        logits = self.edge_updater(edge_index, q=q, k=k, bias=bias)  # (E, H)
        dst = edge_index[1]

        tok_logits = tok_v = None
        if tokens is not None and tokens.shape[1] > 0:
            kt = self._split(self.lin_k(tokens))  # (B, T, H, dh)
            tok_v = self._split(self.lin_v(tokens))
            kt_n, tok_v = kt[batch], tok_v[batch]  # (n, T, H, dh)
            tok_logits = torch.einsum("nhd,nthd->nht", q, kt_n) * self.scale

        # one softmax over graph keys and token keys
        m = group_amax(logits.detach(), dst, n)  # (n, H)
        if tok_logits is not None:
            m = torch.maximum(m, tok_logits.detach().amax(-1))
        m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
        ex = (logits - m[dst]).exp()
        z = scatter(ex, dst, 0, dim_size=n, reduce="sum")
        if tok_logits is not None:
            ex_t = (tok_logits - m.unsqueeze(-1)).exp()
            z = z + ex_t.sum(-1)
        z = torch.where(z > 0, z, torch.ones_like(z))
        alpha = ex / z[dst]
        out = self.propagate(edge_index, v=v, alpha=alpha, size=(n, n))  # (n, H, dh)
        if tok_logits is not None:
            out = out + torch.einsum("nht,nthd->nhd", ex_t / z.unsqueeze(-1), tok_v)
        return self.lin_o(out.reshape(n, self.dim))

    def edge_update(self, q_i: Tensor, k_j: Tensor, bias: Tensor | None) -> Tensor:
        logit = (q_i * k_j).sum(-1) * self.scale
        return logit if bias is None else logit + bias

    def message(self, v_j: Tensor, alpha: Tensor) -> Tensor:
        return alpha.unsqueeze(-1) * v_j

    def __repr__(self) -> str:
        return f"{type(self).__name__}(dim={self.dim}, heads={self.heads})"


def dense_attention(layer: KnnTokenAttention, x: Tensor, bias: Tensor | None = None,
                    tokens: Tensor | None = None) -> Tensor:
    """Plain-torch dense reference of :class:`KnnTokenAttention` for one graph.

    Every node attends to every node (itself included) and to ``tokens``; ``bias``
    ``(n, n, H)`` is added to the node-node logits (``bias[i, j]`` for query ``i``, key ``j``).
    Equals the layer on the complete graph (``J = N - 1``).
    """
    n, H, dh = x.shape[0], layer.heads, layer.head_dim
    q = layer.lin_q(x).view(n, H, dh)
    keys, vals = layer.lin_k(x), layer.lin_v(x)
    logits = torch.einsum("ihd,jhd->ihj", q, keys.view(n, H, dh)) * layer.scale
    if bias is not None:
        logits = logits + bias.permute(0, 2, 1)
    v = vals.view(n, H, dh)
    if tokens is not None and tokens.shape[0] > 0:
        kt = layer.lin_k(tokens).view(-1, H, dh)
        tl = torch.einsum("ihd,thd->iht", q, kt) * layer.scale
        logits = torch.cat([logits, tl], dim=-1)
        v = torch.cat([v, layer.lin_v(tokens).view(-1, H, dh)])
    att = torch.softmax(logits, dim=-1)
    return layer.lin_o(torch.einsum("ihj,jhd->ihd", att, v).reshape(n, layer.dim))


class AttentionBlock(nn.Module):
    """Set-Transformer MAB on the graph: ``Y = LN(x W^Q + MHA(x, keys))``, ``LN(Y + FF(Y))``.

    ``FF`` is a two-layer tanh MLP with dropout (the seed's activations).

    Parameters
    ----------
    dim, heads, edge_dim :
        As in :class:`KnnTokenAttention`.
    hidden : int
        Width of the feed-forward layer.
    dropout : float
        Dropout at the input of the feed-forward hidden layer.
    """

    def __init__(self, dim: int, heads: int = 4, edge_dim: int = 0, hidden: int = 128,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.attn = KnnTokenAttention(dim, heads, edge_dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.ff = tanh_mlp(dim, hidden, dim, 1, dropout)

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor | None = None,
                tokens: Tensor | None = None, batch: Tensor | None = None) -> Tensor:
        """Shapes as in :meth:`KnnTokenAttention.forward`; returns (n_nodes, dim)."""
        y = self.norm1(self.attn.lin_q(x) + self.attn(x, edge_index, edge_attr, tokens, batch))
        return self.norm2(y + self.ff(y))


class SetPool(nn.Module):
    """Pooling by multi-head attention (PMA): learned seeds attend to the nodes of each group.

    For every group ``g`` (a graph, a cluster, ...) and seed ``r``:
    ``Y = LN(s_r W^Q + MHA(s_r, {x_i : index_i = g, mask_i}))``, output ``LN(Y + FF(Y))``.
    A group without (unmasked) nodes gets the zero vector.

    Parameters
    ----------
    dim, heads : int
    n_seeds : int
        Outputs per group ``T``.
    hidden : int
        Feed-forward width.
    dropout : float
    """

    def __init__(self, dim: int, heads: int = 4, n_seeds: int = 1, hidden: int = 128,
                 dropout: float = 0.0) -> None:
        super().__init__()
        if dim % heads:
            raise GraphclustError(f"dim={dim} must be divisible by heads={heads}")
        self.dim, self.heads, self.head_dim, self.n_seeds = dim, heads, dim // heads, n_seeds
        self.seeds = nn.Parameter(torch.zeros(n_seeds, dim))
        self.lin_q = nn.Linear(dim, dim, bias=False)
        self.lin_k = nn.Linear(dim, dim, bias=False)
        self.lin_v = nn.Linear(dim, dim, bias=False)
        self.lin_o = nn.Linear(dim, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.ff = tanh_mlp(dim, hidden, dim, 1, dropout)
        self.scale = 1.0 / math.sqrt(self.head_dim)

    def forward(self, x: Tensor, index: Tensor, num_groups: int,
                mask: Tensor | None = None) -> Tensor:
        """Pool.

        Parameters
        ----------
        x : Tensor of shape (n, dim)
        index : LongTensor of shape (n,)
            Group of each row.
        num_groups : int
        mask : BoolTensor of shape (n,), optional
            Rows that take part.

        Returns
        -------
        Tensor of shape (num_groups, n_seeds, dim)
        """
        if mask is not None:
            x, index = x[mask], index[mask]
        H, dh, T = self.heads, self.head_dim, self.n_seeds
        q = self.lin_q(self.seeds)  # (T, d)
        k = self.lin_k(x).view(-1, H, dh)
        v = self.lin_v(x).view(-1, H, dh)
        logits = torch.einsum("nhd,thd->nht", k, q.view(T, H, dh)) * self.scale  # (n, H, T)
        m = group_amax(logits.detach(), index, num_groups)
        m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
        ex = (logits - m[index]).exp()
        z = scatter(ex, index, 0, dim_size=num_groups, reduce="sum")
        alpha = ex / z.clamp_min(1e-30)[index]  # (n, H, T)
        outs = [
            scatter(alpha[:, :, t, None] * v, index, 0, dim_size=num_groups, reduce="sum")
            for t in range(T)
        ]  # T x (G, H, dh): one (n, d) product at a time
        att = self.lin_o(torch.stack(outs, dim=1).reshape(num_groups, T, self.dim))
        y = self.norm1(q.unsqueeze(0) + att)
        y = self.norm2(y + self.ff(y))
        count = torch.bincount(index, minlength=num_groups)
        return y * (count > 0).to(y.dtype).view(-1, 1, 1)

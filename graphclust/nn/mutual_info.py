"""Mutual-information terms of VCAMI: discrete MI of two views' cluster assignments, and the
Jensen-Shannon MI estimator with a pair discriminator (Deep InfoMax style).

Discrete MI (VCAMI's ``L_CMI``, exact, as in IIC): with soft assignments ``p_i`` of
``x_i`` and ``p'_i`` of its augmentation, the joint over a batch of ``n`` rows is

    P = 1/n sum_i p_i p'_i^T      (symmetrised: (P + P^T) / 2),
    I(P) = sum_kl P_kl ln( P_kl / (P_k. P_.l) ).

Because ``P`` is a mean over rows, ``I`` splits into per-row terms
``c_i = sum_kl Q^i_kl ln(P_kl / (P_k. P_.l))`` with ``Q^i`` row ``i``'s (symmetrised)
outer product: ``mean_i c_i = I(P)`` exactly, and the gradients agree as well (the
derivative of the log factor sums to zero over the batch), so a per-node objective can
carry the batch MI.

JSD estimator (VCAMI's ``L_GMI`` / ``L_LMI``): for a discriminator ``T(a, b)``,

    E_{joint} ln sigma(T) + E_{marginals} ln(1 - sigma(T)),

one positive pair and one negative pair per row.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from graphclust.nn.mlp import mlp
from graphclust.utils import GraphclustError

__all__ = [
    "PairDiscriminator",
    "discrete_mutual_information",
    "joint_assignments",
    "jsd_mi_terms",
    "mutual_information_per_node",
]

#: Probabilities are floored here before logs.
P_FLOOR = 1e-12


def _outer(p: Tensor, q: Tensor, symmetric: bool) -> Tensor:
    if p.shape != q.shape or p.dim() != 2:
        raise GraphclustError(
            f"the two views' assignments must both be (n, K), got {tuple(p.shape)} and "
            f"{tuple(q.shape)}"
        )
    outer = p.unsqueeze(2) * q.unsqueeze(1)  # (n, K, K)
    return 0.5 * (outer + outer.transpose(1, 2)) if symmetric else outer


def joint_assignments(p: Tensor, q: Tensor, symmetric: bool = True) -> Tensor:
    """``P = mean_i p_i q_i^T`` (symmetrised), shape (K, K), summing to 1.

    Parameters
    ----------
    p, q : Tensor of shape (n, K)
        Soft assignments of two views of the same rows (each row a simplex).
    symmetric : bool
    """
    return _outer(p, q, symmetric).mean(0)


def discrete_mutual_information(P: Tensor) -> Tensor:
    """``I = sum_kl P_kl ln(P_kl / (P_k. P_.l))`` of a joint distribution ``P`` (K, K)."""
    P = P.clamp_min(P_FLOOR)
    row = P.sum(1, keepdim=True)
    col = P.sum(0, keepdim=True)
    return (P * (P.log() - row.log() - col.log())).sum()


def mutual_information_per_node(p: Tensor, q: Tensor, symmetric: bool = True) -> Tensor:
    """Per-row terms ``c_i`` whose mean is ``I(P)`` of :func:`joint_assignments` (same gradient).

    Parameters
    ----------
    p, q : Tensor of shape (n, K)

    Returns
    -------
    Tensor of shape (n,)
    """
    outer = _outer(p, q, symmetric)
    P = outer.mean(0).clamp_min(P_FLOOR)
    log_ratio = P.log() - P.sum(1, keepdim=True).log() - P.sum(0, keepdim=True).log()
    return (outer * log_ratio).sum((1, 2))


def jsd_mi_terms(pos: Tensor, neg: Tensor) -> Tensor:
    """``ln sigma(pos) + ln(1 - sigma(neg))`` per row: the JSD MI estimator's terms (to maximise).

    Parameters
    ----------
    pos, neg : Tensor of shape (n,)
        Discriminator scores of each row's positive (joint) and negative (product of
        marginals) pair.
    """
    return -F.softplus(-pos) - F.softplus(neg)


class PairDiscriminator(nn.Module):
    """``T(a, b)``: an MLP on the concatenation ``[a, b]`` with one score per row.

    Parameters
    ----------
    a_dim, b_dim : int
    hidden : sequence of int
        Hidden widths, e.g. ``(256,)``.
    generator : torch.Generator, optional
    """

    def __init__(
        self, a_dim: int, b_dim: int, hidden: Sequence[int] = (256,),
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.net = mlp((a_dim + b_dim, *hidden, 1), generator)

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        """``a`` (n, a_dim), ``b`` (n, b_dim) -> scores (n,)."""
        return self.net(torch.cat([a, b], dim=-1)).squeeze(-1)

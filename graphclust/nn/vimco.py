"""The VIMCO multi-sample bound and its gradient surrogate (Mnih & Rezende, 2016).

With ``M`` samples ``h_m = (y_m, z_m) ~ q(y, z | x)`` and log weights
``ln w_m = ln p(x, y_m, z_m) - ln q(y_m, z_m | x)`` the bound is

    L^M = ln (1/M) sum_m w_m                       (<= ln p(x); L^1 is the ELBO).

The discrete ``y_m`` cannot be reparameterised, so its gradient is the score-function
term with VIMCO's per-sample leave-one-out baseline: ``L_{-m}`` is ``L^M`` with ``ln w_m``
replaced by the mean of the other ``M - 1`` log weights (a geometric mean of their weights),
and

    grad L^M = sum_m (L^M - L_{-m}) grad ln q(y_m | x) + sum_m w~_m grad ln w_m,

``w~`` the normalised weights. :func:`vimco_terms` returns a *surrogate* whose value is
``L^M`` and whose autograd gradient is exactly that estimator: the second sum is autograd
of ``L^M`` itself (``ln w_m`` is differentiable in the continuous ``z_m`` by the
reparameterisation trick and in ``ln q(y_m | x)`` directly), the first is added with the
advantages ``L^M - L_{-m}`` held constant.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from graphclust.utils import GraphclustError

__all__ = ["VimcoTerms", "leave_one_out_bounds", "log_mean_exp", "vimco_terms"]


class VimcoTerms(NamedTuple):
    """The VIMCO bound of each row and its gradient surrogate.

    Attributes
    ----------
    bound : Tensor of shape (n,)
        ``L^M = ln mean_m exp(ln w_m)``.
    surrogate : Tensor of shape (n,)
        Equal to ``bound`` in value; its gradient is the VIMCO estimator.
    advantage : Tensor of shape (n, M)
        ``L^M - L_{-m}`` (detached): the learning signal of ``ln q(y_m | x)``.
    """

    bound: Tensor
    surrogate: Tensor
    advantage: Tensor


def log_mean_exp(log_w: Tensor, dim: int = -1) -> Tensor:
    """``ln mean exp(log_w)`` along ``dim``, computed stably."""
    return torch.logsumexp(log_w, dim=dim) - math.log(log_w.shape[dim])


def leave_one_out_bounds(log_w: Tensor) -> Tensor:
    """``L_{-m}``: the bound with ``ln w_m`` replaced by the mean of the other log weights.

    Parameters
    ----------
    log_w : Tensor of shape (n, M), ``M >= 2``

    Returns
    -------
    Tensor of shape (n, M)
    """
    n, M = log_w.shape
    others_mean = (log_w.sum(-1, keepdim=True) - log_w) / (M - 1)  # (n, M)
    replaced = log_w.unsqueeze(1).expand(n, M, M).clone()  # row m: the M log weights ...
    idx = torch.arange(M, device=log_w.device)
    replaced[:, idx, idx] = others_mean  # ... with entry m swapped for the others' mean
    return log_mean_exp(replaced, dim=-1)


def vimco_terms(log_w: Tensor, log_q_discrete: Tensor) -> VimcoTerms:
    """The VIMCO bound and surrogate of ``M`` samples per row.

    Parameters
    ----------
    log_w : Tensor of shape (n, M)
        ``ln p(x, y_m, z_m) - ln q(y_m, z_m | x)`` of each sample (differentiable).
    log_q_discrete : Tensor of shape (n, M)
        ``ln q(y_m | x)`` of the sampled discrete values (differentiable), the part of the
        proposal whose gradient needs the score function.

    Returns
    -------
    VimcoTerms

    Raises
    ------
    GraphclustError
        With fewer than two samples (the leave-one-out baseline needs ``M >= 2``).
    """
    if log_w.dim() != 2 or log_w.shape != log_q_discrete.shape:
        raise GraphclustError(
            f"log_w and log_q_discrete must both be (n, M), got {tuple(log_w.shape)} and "
            f"{tuple(log_q_discrete.shape)}"
        )
    if log_w.shape[1] < 2:
        raise GraphclustError(
            f"VIMCO needs at least 2 samples per row (its baseline leaves one out), got "
            f"{log_w.shape[1]}; use n_samples >= 2"
        )
    bound = log_mean_exp(log_w)
    with torch.no_grad():
        advantage = bound.unsqueeze(-1) - leave_one_out_bounds(log_w)
    score = (advantage * (log_q_discrete - log_q_discrete.detach())).sum(-1)  # value 0
    return VimcoTerms(bound, bound + score, advantage)

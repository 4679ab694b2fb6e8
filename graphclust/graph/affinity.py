"""Affinity kernels: kNN distances -> edge weights, and row normalisation.

Every kernel is a pure function ``(distances (n, k), **params) -> weights (n, k)``
on the fixed-width kNN layout; symmetrisation works on the sparse form (see
:mod:`graphclust.graph.graph`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from graphclust.utils import GraphclustError

__all__ = [
    "KERNELS",
    "get_kernel",
    "heat",
    "row_normalize",
    "self_tuning_gaussian",
    "uniform",
]


def _check_distances(distances: np.ndarray) -> np.ndarray:
    d = np.asarray(distances, dtype=np.float64)
    if d.ndim != 2:
        raise GraphclustError(f"distances must be 2-D (n_nodes, k), got shape {d.shape}")
    if not np.all(np.isfinite(d)) or np.any(d < 0):
        raise GraphclustError("distances must be finite and non-negative")
    return d


def self_tuning_gaussian(distances: np.ndarray, k_sigma: int | None = None) -> np.ndarray:
    """Gaussian kernel with a per-node bandwidth from its own neighbour distances.

    ``w_ij = exp(-d_ij^2 / (2 s_i^2))`` with ``s_i`` the distance of node ``i`` to
    its ``k_sigma``-th neighbour (the last one by default), as in the DGG design note.
    A node whose bandwidth is zero (all neighbours are duplicates) gets weight 1 on
    neighbours at distance 0 and 0 elsewhere.

    Parameters
    ----------
    distances : ndarray of shape (n_nodes, k)
        Euclidean distances, ascending per row.
    k_sigma : int, optional
        1-based neighbour rank giving the bandwidth, ``1 <= k_sigma <= k``.

    Returns
    -------
    ndarray of shape (n_nodes, k), float32, values in (0, 1].
    """
    d = _check_distances(distances)
    k = d.shape[1]
    k_sigma = k if k_sigma is None else int(k_sigma)
    if not 1 <= k_sigma <= k:
        raise GraphclustError(f"k_sigma must lie in [1, {k}], got {k_sigma}")
    sigma = d[:, k_sigma - 1 : k_sigma]
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.exp(-(d**2) / (2.0 * sigma**2))
    zero_bw = sigma[:, 0] == 0
    if zero_bw.any():
        w[zero_bw] = (d[zero_bw] == 0).astype(np.float64)
    return w.astype(np.float32)


def uniform(distances: np.ndarray) -> np.ndarray:
    """Weight 1 on every kNN edge (the reference code's effective kernel)."""
    d = _check_distances(distances)
    return np.ones_like(d, dtype=np.float32)


def heat(distances: np.ndarray, t: float | None = None) -> np.ndarray:
    """Heat kernel ``exp(-d_ij^2 / t)`` with one global ``t``.

    Parameters
    ----------
    t : float, optional
        Temperature; defaults to the mean squared kNN distance (a scale-free choice).
    """
    d = _check_distances(distances)
    if t is None:
        t = float(np.mean(d**2))
        if t == 0:
            t = 1.0
    if not np.isfinite(t) or t <= 0:
        raise GraphclustError(f"heat kernel temperature t must be > 0, got {t}")
    return np.exp(-(d**2) / t).astype(np.float32)


def row_normalize(weights: np.ndarray) -> np.ndarray:
    """Scale each row to sum to one; an all-zero row becomes uniform (no node is isolated)."""
    w = np.asarray(weights, dtype=np.float64)
    s = w.sum(axis=1, keepdims=True)
    out = np.where(s > 0, w / np.where(s > 0, s, 1.0), 1.0 / w.shape[1])
    return out.astype(np.float32)


KERNELS: dict[str, Callable[..., np.ndarray]] = {
    "gaussian": self_tuning_gaussian,
    "uniform": uniform,
    "heat": heat,
}


def get_kernel(name: str) -> Callable[..., np.ndarray]:
    """Look up a kernel by its CLI/config name."""
    try:
        return KERNELS[name]
    except KeyError:
        raise GraphclustError(
            f"unknown kernel {name!r}; expected one of {sorted(KERNELS)}"
        ) from None

"""k-nearest-neighbour search: the one faiss dispatch point, plus a torch reference.

All paths return a :class:`KNNResult` for the all-pairs problem on ``X`` itself
(self excluded), distances as *Euclidean* (not squared), sorted ascending.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from graphclust.utils import GraphclustError, check_features, resolve_device

__all__ = ["KNNResult", "knn_torch", "knn_search", "check_k"]


class KNNResult(NamedTuple):
    """Neighbours of every point.

    Attributes
    ----------
    indices : numpy.ndarray, shape (n_samples, k), int64
        Neighbour ids, nearest first; a point is never its own neighbour.
    distances : numpy.ndarray, shape (n_samples, k), float32
        Euclidean distances matching ``indices`` (ascending).
    """

    indices: np.ndarray
    distances: np.ndarray


def check_k(k: int, n_samples: int) -> int:
    """Validate ``k`` for an all-pairs search over ``n_samples`` points (self excluded)."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise GraphclustError(f"k must be an integer, got {k!r}")
    k = int(k)
    if k < 1:
        raise GraphclustError(f"k must be >= 1, got {k}")
    if k >= n_samples:
        raise GraphclustError(
            f"k={k} neighbours were asked for but there are only {n_samples} points "
            f"(at most {n_samples - 1} neighbours each, self excluded); use a smaller k"
        )
    return k


def knn_torch(
    X: np.ndarray | torch.Tensor, k: int, block_size: int = 2048, device: str = "cpu"
) -> KNNResult:
    """Exact kNN by ``torch.cdist`` + ``topk``, block by block; the reference implementation.

    Ties are broken towards the smaller index (stable), so the result is fully
    deterministic; duplicate points are kept as neighbours at distance 0.

    Parameters
    ----------
    X : array of shape (n_samples, n_features)
    k : int
        Neighbours per point, ``1 <= k < n_samples``.
    block_size : int
        Query rows per block (memory is ``block_size * n_samples`` floats).
    device : str
        Torch device for the computation.
    """
    Xn = check_features(X)
    n = Xn.shape[0]
    k = check_k(k, n)
    dev = resolve_device(device)
    Xt = torch.from_numpy(Xn).to(dev, torch.float64)
    out_i = np.empty((n, k), dtype=np.int64)
    out_d = np.empty((n, k), dtype=np.float32)
    for start in range(0, n, block_size):
        stop = min(n, start + block_size)
        d2 = torch.cdist(Xt[start:stop], Xt).pow_(2)
        rows = torch.arange(stop - start, device=dev)
        d2[rows, rows + start] = float("inf")
        # stable sort gives the smaller index first among equal distances
        order = torch.sort(d2, dim=1, stable=True).indices[:, :k]
        dist = torch.gather(d2, 1, order).clamp_min_(0).sqrt_()
        out_i[start:stop] = order.cpu().numpy()
        out_d[start:stop] = dist.cpu().numpy().astype(np.float32)
    return KNNResult(out_i, out_d)


def knn_search(X, k: int, method: str = "exact", device: str = "auto", **kwargs) -> KNNResult:
    """Placeholder dispatch; replaced by the faiss dispatch below."""
    raise NotImplementedError

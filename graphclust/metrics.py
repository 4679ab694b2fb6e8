"""Clustering metrics (ACC with Hungarian matching, NMI, ARI) and graph quality (neighbour purity)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from graphclust.utils import GraphclustError

__all__ = [
    "ClusterScores",
    "cluster_acc",
    "match_clusters",
    "neighbor_purity",
    "purity_curve",
    "score_clustering",
]


class ClusterScores(NamedTuple):
    """ACC, NMI and ARI of one clustering."""

    acc: float
    nmi: float
    ari: float

    def as_dict(self) -> dict[str, float]:
        return {"acc": self.acc, "nmi": self.nmi, "ari": self.ari}


def _check_pair(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(y_true)
    p = np.asarray(y_pred)
    if t.ndim != 1 or p.ndim != 1 or t.shape != p.shape:
        raise GraphclustError(
            f"y_true and y_pred must be 1-D of equal length, got {t.shape} and {p.shape}"
        )
    if t.size == 0:
        raise GraphclustError("cannot score an empty clustering")
    return t, p


def match_clusters(y_true, y_pred) -> dict[int, int]:
    """Hungarian matching of predicted clusters to classes maximising agreement.

    Returns
    -------
    dict
        ``{predicted_cluster: matched_class}`` for every predicted cluster that
        gets a class (with more clusters than classes, some stay unmatched).
    """
    t, p = _check_pair(y_true, y_pred)
    classes, t_idx = np.unique(t, return_inverse=True)
    clusters, p_idx = np.unique(p, return_inverse=True)
    counts = np.zeros((clusters.size, classes.size), dtype=np.int64)
    np.add.at(counts, (p_idx, t_idx), 1)
    rows, cols = linear_sum_assignment(counts, maximize=True)
    return {int(clusters[r]): int(classes[c]) for r, c in zip(rows, cols)}


def cluster_acc(y_true, y_pred) -> float:
    """Unsupervised clustering accuracy: the best one-to-one cluster-to-class map.

    ``ACC = max_m (1/n) sum_i 1[y_i = m(c_i)]`` over one-to-one maps ``m``,
    solved with the Hungarian algorithm.
    """
    t, p = _check_pair(y_true, y_pred)
    mapping = match_clusters(t, p)
    hits = sum(int(np.sum((p == c) & (t == k))) for c, k in mapping.items())
    return hits / t.size


def score_clustering(y_true, y_pred) -> ClusterScores:
    """ACC, NMI (arithmetic normalisation, as scikit-learn's default) and ARI."""
    t, p = _check_pair(y_true, y_pred)
    return ClusterScores(
        acc=float(cluster_acc(t, p)),
        nmi=float(normalized_mutual_info_score(t, p)),
        ari=float(adjusted_rand_score(t, p)),
    )


def neighbor_purity(indices: np.ndarray, labels, k: int | None = None) -> float:
    """Fraction of kNN edges whose two endpoints share a label.

    Parameters
    ----------
    indices : ndarray of shape (n_nodes, k_max)
        Neighbour lists, nearest first.
    labels : array of shape (n_nodes,)
    k : int, optional
        Use the first ``k`` neighbours (default: all).
    """
    idx = np.asarray(indices)
    y = np.asarray(labels)
    if idx.ndim != 2 or y.shape != (idx.shape[0],):
        raise GraphclustError(
            f"indices must be (n_nodes, k) and labels (n_nodes,), got {idx.shape} and {y.shape}"
        )
    k = idx.shape[1] if k is None else int(k)
    if not 1 <= k <= idx.shape[1]:
        raise GraphclustError(f"k must lie in [1, {idx.shape[1]}], got {k}")
    return float(np.mean(y[idx[:, :k]] == y[:, None]))


def purity_curve(indices: np.ndarray, labels, ks=None) -> dict[int, float]:
    """Neighbour purity at several ``k`` (default 1, 5, 10, 20, 50, 100 up to the graph's k)."""
    k_max = np.asarray(indices).shape[1]
    ks = [k for k in (1, 5, 10, 20, 50, 100) if k <= k_max] if ks is None else list(ks)
    return {int(k): neighbor_purity(indices, labels, k) for k in ks}

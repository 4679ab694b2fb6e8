"""Consensus of several clusterings by evidence accumulation.

Several runs of a clustering (different seeds, UMAP neighbourhoods, metrics) each get some
clusters right and some wrong, and they rarely err in the same place. Evidence accumulation
(Fred & Jain, 2005) counts, for every pair of rows, the fraction of runs that put the two in
the same cluster (the *co-association*) and clusters that matrix by average linkage.

:func:`coassociation_labels` does this exactly, without the ``(n, n)`` matrix: rows that every
run labels alike (an *atom*) are always merged first, so the linkage runs on the atoms, each
weighted by its size. The result is the average linkage of the rows themselves (tested against
scikit-learn's ``AgglomerativeClustering``).
"""

from __future__ import annotations

import numpy as np

from graphclust.utils import GraphclustError

__all__ = ["coassociation_labels"]


def _check_label_sets(label_sets) -> np.ndarray:
    L = np.asarray(label_sets)
    if L.ndim != 2 or L.shape[0] < 1 or L.shape[1] < 1:
        raise GraphclustError(
            f"label_sets must be a 2-D array of shape (n_runs, n_samples), one row per "
            f"clustering; got shape {L.shape}")
    if not np.issubdtype(L.dtype, np.integer):
        raise GraphclustError(f"label_sets must hold integer labels, got dtype {L.dtype}")
    if L.min() < 0:
        raise GraphclustError("label_sets must hold non-negative labels")
    return L


def _average_linkage_merges(between: np.ndarray, sizes: np.ndarray) -> list[tuple[float, int, int]]:
    """Every merge of weighted average linkage, by the nearest-neighbour chain.

    ``between[a, b]`` is the summed similarity of all row pairs of groups ``a`` and ``b``;
    the distance of two groups is ``1 - between / (size_a * size_b)``. Average linkage is
    reducible, so the chain finds the same merges as the greedy algorithm, in O(m^2) time,
    though not in height order. Returns ``(height, kept, absorbed)`` per merge.
    """
    m = sizes.shape[0]
    between = between.astype(np.float64, copy=True)
    sizes = sizes.astype(np.float64, copy=True)
    active = np.ones(m, dtype=bool)
    merges: list[tuple[float, int, int]] = []
    chain: list[int] = []
    while len(merges) < m - 1:
        if not chain:
            chain.append(int(np.flatnonzero(active)[0]))
        a = chain[-1]
        dist = 1.0 - between[a] / (sizes[a] * sizes)
        dist[~active] = np.inf
        dist[a] = np.inf
        b = int(np.argmin(dist))
        # keep the chain's previous element on a tie: that is what ends the chain
        if len(chain) > 1 and dist[chain[-2]] <= dist[b]:
            b = chain[-2]
        if len(chain) > 1 and b == chain[-2]:
            chain.pop()
            chain.pop()
            keep, gone = min(a, b), max(a, b)
            merges.append((float(dist[b]), keep, gone))
            between[keep] += between[gone]
            between[:, keep] += between[:, gone]
            sizes[keep] += sizes[gone]
            active[gone] = False
        else:
            chain.append(b)
    return merges


def coassociation_labels(label_sets, n_clusters: int, weights=None,
                         max_atoms: int = 10_000) -> np.ndarray:
    """Consensus clustering of several label vectors (evidence accumulation).

    The co-association of rows ``i`` and ``j`` is the weighted fraction of runs that give them
    the same label. The rows are clustered by average linkage on ``1 - co-association``
    (the mean over all row pairs of two groups), cut at ``n_clusters`` groups.

    Parameters
    ----------
    label_sets : array-like of int, shape (n_runs, n_samples)
        One clustering per row; label values only need to be non-negative (they are compared
        within a run, never across runs).
    n_clusters : int
        Groups wanted, ``>= 2`` and at most the number of distinct label vectors.
    weights : array-like of float, shape (n_runs,), optional
        Weight of each run in the co-association (non-negative, not all zero); equal when
        omitted.
    max_atoms : int
        Most distinct label vectors (rows that all runs label alike form one) accepted: the
        linkage holds a dense ``(m, m)`` float64 matrix (10,000 atoms: 800 MB).

    Returns
    -------
    labels : ndarray of int64, shape (n_samples,)
        Group of each row, numbered ``0..n_clusters - 1`` in order of first appearance.
    """
    from graphclust.data.synthetic import relabel_first_appearance

    L = _check_label_sets(label_sets)
    n_runs, n = L.shape
    w = np.ones(n_runs) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (n_runs,) or not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise GraphclustError(f"weights must be {n_runs} finite non-negative numbers, not all "
                              f"zero (one per run); got {np.asarray(weights)!r}")
    w = w / w.sum()
    atoms, inverse, counts = np.unique(L.T, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    m = atoms.shape[0]
    if isinstance(n_clusters, bool) or not isinstance(n_clusters, (int, np.integer)) \
            or not 2 <= n_clusters <= m:
        raise GraphclustError(
            f"n_clusters must be an integer in [2, {m}] (the distinct label vectors of the "
            f"{n} rows); got {n_clusters!r}")
    if m > max_atoms:
        raise GraphclustError(
            f"the runs split the rows into {m} distinct label vectors, more than max_atoms="
            f"{max_atoms}; use fewer or coarser runs, or raise max_atoms (memory grows as "
            f"8 * m^2 bytes)")
    agree = np.zeros((m, m))
    for r in range(n_runs):
        agree += w[r] * (atoms[:, r, None] == atoms[None, :, r])
    between = agree * np.outer(counts, counts)
    merges = _average_linkage_merges(between, counts)
    # replay the lowest m - n_clusters merges (stable: the chain's order breaks height ties)
    order = sorted(range(len(merges)), key=lambda t: merges[t][0])[: m - n_clusters]
    parent = np.arange(m)

    def root(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for t in order:
        _, a, b = merges[t]
        ra, rb = root(a), root(b)
        parent[max(ra, rb)] = min(ra, rb)
    return relabel_first_appearance(np.array([root(a) for a in range(m)])[inverse])

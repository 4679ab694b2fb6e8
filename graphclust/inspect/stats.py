"""The numbers behind every inspection panel, as pure functions.

Conventions
-----------
An *affinity matrix* ``A`` is a scipy sparse ``(n_nodes, n_nodes)`` matrix with
``A[i, j]`` the weight of the edge from node ``i`` to its neighbour ``j`` (the
layout of :meth:`graphclust.graph.graph.KNNGraph.to_scipy`). Its stored entries
are the graph's edges, so a row lists the neighbours of a node and a column the
nodes that list it (its in-degree). Nothing here forms a dense ``n x n`` matrix:
aggregates are sparse products with ``(n_nodes, n_groups)`` indicator matrices.

*Groups* are one integer per node in ``[0, n_groups)``: predicted clusters, true
labels (encoded), or connected components.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp

from graphclust.metrics import match_clusters, purity_curve
from graphclust.utils import GraphclustError, check_random_state

__all__ = [
    "Ambiguous",
    "BlockAffinity",
    "Confusion",
    "Histogram",
    "NearestCluster",
    "TopFeatures",
    "ambiguous_nodes",
    "block_affinity",
    "block_bounds",
    "check_affinity",
    "cluster_affinity",
    "confusion",
    "edge_groups",
    "encode_groups",
    "group_strength",
    "histogram",
    "in_degree",
    "indicator",
    "knn_purity_curve",
    "map_2d",
    "nearest_clusters",
    "neighbor_agreement",
    "ordered_block_affinity",
    "ordering",
    "posterior_agreement",
    "representatives",
    "subsample",
    "top_features",
]

# edges per chunk when per-edge products are formed (E x n_clusters floats)
_EDGE_CHUNK = 1 << 20


# --------------------------------------------------------------------------- containers
class BlockAffinity(NamedTuple):
    """A block-aggregated affinity matrix of ordered nodes.

    Attributes
    ----------
    matrix : ndarray of shape (n_blocks, n_blocks)
        Mean affinity ``A[i, j]`` over the nodes ``i`` of row block ``a`` and ``j``
        of column block ``b`` (see :func:`block_affinity`).
    bounds : ndarray of shape (n_blocks + 1,)
        Block ``a`` holds the ordered positions ``bounds[a] <= p < bounds[a + 1]``.
    group_bounds : ndarray of shape (n_groups_present + 1,)
        Positions where each group of the ordering starts (and ``n_nodes`` last).
    group_ids : ndarray of shape (n_groups_present,)
        The group of each run of ``group_bounds``.
    order : ndarray of shape (n_nodes,)
        The node at each position.
    """

    matrix: np.ndarray
    bounds: np.ndarray
    group_bounds: np.ndarray
    group_ids: np.ndarray
    order: np.ndarray


class Confusion(NamedTuple):
    """Cluster x class counts after Hungarian matching.

    Attributes
    ----------
    matrix : ndarray of shape (n_clusters, n_classes), int64
        ``matrix[r, c]``: nodes of cluster ``clusters[r]`` with class ``classes[c]``.
    clusters : ndarray of shape (n_clusters,)
        Row order: the cluster matched to ``classes[0]`` first, then to ``classes[1]``,
        ...; clusters left without a class come last.
    classes : ndarray of shape (n_classes,)
        Sorted class values.
    mapping : dict
        ``{cluster: matched class}`` from :func:`graphclust.metrics.match_clusters`.
    """

    matrix: np.ndarray
    clusters: np.ndarray
    classes: np.ndarray
    mapping: dict


class Ambiguous(NamedTuple):
    """The nodes of lowest agreement, most ambiguous first."""

    nodes: np.ndarray
    scores: np.ndarray


class NearestCluster(NamedTuple):
    """For each cluster the other cluster of highest symmetrised affinity.

    ``cluster`` is ``-1`` (and ``affinity`` 0) for a cluster with no affinity to any other.
    """

    cluster: np.ndarray
    affinity: np.ndarray


class TopFeatures(NamedTuple):
    """Per group: the features whose group mean exceeds the overall mean the most.

    Attributes
    ----------
    features : ndarray of shape (n_groups, n_top), int64
    differences : ndarray of shape (n_groups, n_top)
        ``mean over the group - mean over all nodes`` of each listed feature.
    """

    features: np.ndarray
    differences: np.ndarray


class Histogram(NamedTuple):
    """``counts[b]`` values fall in ``[edges[b], edges[b + 1])`` (the last bin is closed)."""

    counts: np.ndarray
    edges: np.ndarray


# --------------------------------------------------------------------------- basics
def check_affinity(A, n_nodes: int | None = None) -> sp.csr_matrix:
    """Validate a sparse square affinity matrix and return it as float64 CSR.

    Raises
    ------
    GraphclustError
        When ``A`` is dense, not square, not of ``n_nodes`` rows, or holds NaN/inf.
    """
    if not sp.issparse(A):
        raise GraphclustError(
            f"the affinity matrix must be scipy.sparse (n_nodes, n_nodes), got {type(A).__name__}; "
            "a dense n x n matrix is never needed (use KNNGraph.to_scipy())"
        )
    if A.ndim != 2 or A.shape[0] != A.shape[1]:
        raise GraphclustError(f"the affinity matrix must be square, got shape {A.shape}")
    if n_nodes is not None and A.shape[0] != n_nodes:
        raise GraphclustError(
            f"the affinity matrix has {A.shape[0]} rows but there are {n_nodes} nodes"
        )
    out = sp.csr_matrix(A, dtype=np.float64)
    if out.nnz and not np.all(np.isfinite(out.data)):
        raise GraphclustError("the affinity matrix holds NaN/inf values")
    return out


def encode_groups(values) -> tuple[np.ndarray, np.ndarray]:
    """Map arbitrary integer groups to ``0..n_groups-1``.

    Returns
    -------
    codes : ndarray of shape (n_nodes,), int64
    names : ndarray of shape (n_groups,)
        ``names[codes[i]] == values[i]``.
    """
    names, codes = np.unique(np.asarray(values), return_inverse=True)
    return codes.astype(np.int64).ravel(), names


def _check_groups(groups, n_nodes: int, n_groups: int | None = None, name: str = "groups"):
    g = np.asarray(groups)
    if g.shape != (n_nodes,):
        raise GraphclustError(f"{name} must have shape ({n_nodes},), got {g.shape}")
    if g.size and not np.issubdtype(g.dtype, np.integer):
        raise GraphclustError(f"{name} must be integers, got dtype {g.dtype}")
    g = g.astype(np.int64)
    if n_groups is None:
        n_groups = int(g.max()) + 1 if g.size else 0
    if g.size and (g.min() < 0 or g.max() >= n_groups):
        raise GraphclustError(
            f"{name} must lie in [0, {n_groups}), found values in [{g.min()}, {g.max()}]; "
            "encode them first (encode_groups)"
        )
    return g, int(n_groups)


def indicator(groups, n_groups: int | None = None) -> sp.csr_matrix:
    """Sparse one-hot matrix ``Z`` of shape (n_nodes, n_groups): ``Z[i, groups[i]] = 1``."""
    g, n_groups = _check_groups(groups, np.asarray(groups).shape[0], n_groups)
    n = g.shape[0]
    return sp.csr_matrix((np.ones(n), (np.arange(n), g)), shape=(n, n_groups))


# --------------------------------------------------------------------------- orderings
def ordering(groups, secondary=None, score=None) -> np.ndarray:
    """Node order: by ``groups``, then ``secondary``, then decreasing ``score``, then index.

    Parameters
    ----------
    groups : array of shape (n_nodes,)
        Primary key (e.g. clusters or labels), ascending.
    secondary : array of shape (n_nodes,), optional
        Second key, ascending (e.g. the cluster inside each label).
    score : array of shape (n_nodes,), optional
        Third key, descending (e.g. the confidence of the assignment), so the
        most typical members come first in their group.

    Returns
    -------
    ndarray of shape (n_nodes,), int64
        ``order[p]`` is the node at position ``p``.
    """
    g = np.asarray(groups)
    n = g.shape[0]
    keys = [np.arange(n)]
    for arr, sign, name in ((score, -1.0, "score"), (secondary, 1, "secondary")):
        if arr is not None:
            a = np.asarray(arr)
            if a.shape != (n,):
                raise GraphclustError(f"{name} must have shape ({n},), got {a.shape}")
            keys.append(sign * a)
    keys.append(g)
    return np.lexsort(keys).astype(np.int64)


def block_bounds(n_nodes: int, n_blocks: int) -> np.ndarray:
    """Split ``n_nodes`` ordered positions into ``n_blocks`` contiguous near-equal blocks.

    Block ``b`` covers ``ceil(b n / B) <= p < ceil((b + 1) n / B)``; every block is
    non-empty when ``n_blocks <= n_nodes``. Returns ``(n_blocks + 1,)`` bounds.
    """
    if n_blocks < 1 or n_blocks > n_nodes:
        raise GraphclustError(f"n_blocks must lie in [1, n_nodes={n_nodes}], got {n_blocks}")
    b = np.arange(n_blocks + 1, dtype=np.int64)
    return -((-b * n_nodes) // n_blocks)


def block_affinity(A, order, n_blocks: int = 200) -> np.ndarray:
    """Mean affinity between blocks of consecutive nodes of an ordering.

    With positions split by :func:`block_bounds` into blocks ``P_1..P_B``,
    ``M[a, b] = sum_{i in P_a, j in P_b} A[i, j] / (|P_a| |P_b|)``, computed as
    ``S^T A S`` with the sparse ``(n_nodes, B)`` block indicator ``S``; when
    ``n_blocks >= n_nodes`` each block is one node and ``M = A[order][:, order]``.

    Parameters
    ----------
    A : scipy.sparse matrix of shape (n_nodes, n_nodes)
    order : array of shape (n_nodes,)
        A permutation: ``order[p]`` is the node at position ``p``.
    n_blocks : int
        Requested number of blocks (capped at ``n_nodes``).

    Returns
    -------
    ndarray of shape (B, B), float64
    """
    A = check_affinity(A)
    n = A.shape[0]
    order = np.asarray(order, dtype=np.int64)
    if order.shape != (n,) or not np.array_equal(np.sort(order), np.arange(n)):
        raise GraphclustError(f"order must be a permutation of the {n} nodes")
    nb = min(int(n_blocks), n)
    bounds = block_bounds(n, nb)
    block_of_position = np.repeat(np.arange(nb), np.diff(bounds))
    block_of_node = np.empty(n, dtype=np.int64)
    block_of_node[order] = block_of_position
    S = indicator(block_of_node, nb)
    sums = (S.T @ A @ S).toarray()
    sizes = np.diff(bounds).astype(np.float64)
    return sums / np.outer(sizes, sizes)


def ordered_block_affinity(
    A, groups, n_blocks: int = 200, secondary=None, score=None
) -> BlockAffinity:
    """:func:`ordering` then :func:`block_affinity`, with the group boundaries for plotting."""
    order = ordering(groups, secondary, score)
    g = np.asarray(groups)[order]
    matrix = block_affinity(A, order, n_blocks)
    starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]]) if g.size else np.zeros(0, np.int64)
    group_bounds = np.r_[starts, g.size].astype(np.int64)
    return BlockAffinity(
        matrix, block_bounds(g.size, matrix.shape[0]), group_bounds, g[starts], order
    )


# --------------------------------------------------------------------------- cluster level
def cluster_affinity(A, labels, n_clusters: int | None = None) -> np.ndarray:
    """Mean affinity between clusters.

    ``C[a, b] = (sum_{i in a, j in b} A[i, j]) / (|a| |b|)``: the total weight of
    the edges from members of ``a`` to members of ``b``, divided by the number of
    (ordered) node pairs, i.e. the mean of ``A`` over the ``a x b`` block of a
    dense matrix (diagonal pairs ``i = i`` included in ``|a|^2``). Computed as
    ``Z^T A Z / outer(size, size)`` with the sparse one-hot ``Z``. ``C`` is
    symmetric when ``A`` is. Rows and columns of empty clusters are 0.

    Parameters
    ----------
    A : scipy.sparse matrix of shape (n_nodes, n_nodes)
    labels : array of shape (n_nodes,)
        Clusters in ``[0, n_clusters)``.
    n_clusters : int, optional
        Default ``labels.max() + 1``.

    Returns
    -------
    ndarray of shape (n_clusters, n_clusters), float64
    """
    A = check_affinity(A)
    g, k = _check_groups(labels, A.shape[0], n_clusters, "labels")
    Z = indicator(g, k)
    sums = (Z.T @ A @ Z).toarray()
    sizes = np.bincount(g, minlength=k).astype(np.float64)
    denom = np.outer(sizes, sizes)
    return np.divide(sums, denom, out=np.zeros_like(sums), where=denom > 0)


def nearest_clusters(C) -> NearestCluster:
    """Each cluster's nearest *other* cluster: ``argmax_{b != a} (C[a, b] + C[b, a]) / 2``.

    Ties go to the smaller cluster id; a cluster without positive affinity to any
    other (or the only cluster) gets ``-1`` and affinity 0.
    """
    C = np.asarray(C, dtype=np.float64)
    k = C.shape[0]
    if k < 2:
        return NearestCluster(np.full(k, -1, np.int64), np.zeros(k))
    sym = (C + C.T) / 2
    np.fill_diagonal(sym, -np.inf)
    best = np.argmax(sym, axis=1).astype(np.int64)
    value = sym[np.arange(k), best]
    none = ~(value > 0)
    best[none], value[none] = -1, 0.0
    return NearestCluster(best, value)


def confusion(clusters, labels) -> Confusion:
    """Cluster x class counts with rows in Hungarian-matched order (see :class:`Confusion`)."""
    c = np.asarray(clusters)
    t = np.asarray(labels)
    mapping = match_clusters(t, c)
    cl_names, c_idx = np.unique(c, return_inverse=True)
    classes, t_idx = np.unique(t, return_inverse=True)
    counts = np.zeros((cl_names.size, classes.size), dtype=np.int64)
    np.add.at(counts, (c_idx.ravel(), t_idx.ravel()), 1)
    class_pos = {int(v): i for i, v in enumerate(classes)}
    # matched clusters sorted by their class position, unmatched by id after them
    rank = [class_pos[mapping[int(v)]] if int(v) in mapping else classes.size + i
            for i, v in enumerate(cl_names)]
    rows = np.argsort(rank, kind="stable")
    return Confusion(counts[rows], cl_names[rows], classes, mapping)


# --------------------------------------------------------------------------- edges and nodes
def in_degree(A) -> np.ndarray:
    """Number of stored edges pointing at each node (its count as someone's neighbour)."""
    A = check_affinity(A)
    return np.bincount(A.indices, minlength=A.shape[0]).astype(np.int64)


def _edges(A: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    rows = np.repeat(np.arange(A.shape[0], dtype=np.int64), np.diff(A.indptr))
    return rows, A.indices.astype(np.int64)


def edge_groups(A, groups) -> np.ndarray:
    """Per stored edge (CSR order): ``True`` when both ends share a group."""
    A = check_affinity(A)
    g, _ = _check_groups(groups, A.shape[0])
    rows, cols = _edges(A)
    return g[rows] == g[cols]


def histogram(values, bins: int = 50, log: bool = False) -> Histogram:
    """Histogram with ``bins`` equal bins (equal in ``log10`` when ``log`` and all values > 0)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        return Histogram(np.zeros(0, np.int64), np.zeros(1))
    lo, hi = float(v.min()), float(v.max())
    if log and lo > 0 and hi > lo:
        edges = np.logspace(np.log10(lo), np.log10(hi), bins + 1)
    else:
        if hi == lo:
            lo, hi = lo - 0.5, hi + 0.5
        edges = np.linspace(lo, hi, bins + 1)
    counts, edges = np.histogram(v, bins=edges)
    return Histogram(counts.astype(np.int64), edges)


def neighbor_agreement(A, groups) -> np.ndarray:
    """Fraction of each node's neighbours (stored entries of its row) in its own group.

    ``1 - agreement`` is the fraction of neighbours in another group; nodes with
    no neighbours get NaN. Edge weights are ignored: every neighbour counts once.

    Returns
    -------
    ndarray of shape (n_nodes,), float64
    """
    A = check_affinity(A)
    same = edge_groups(A, groups).astype(np.float64)
    rows, _ = _edges(A)
    deg = np.diff(A.indptr).astype(np.float64)
    hits = np.bincount(rows, weights=same, minlength=A.shape[0])
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(deg > 0, hits / np.maximum(deg, 1), np.nan)


def posterior_agreement(A, proba) -> np.ndarray:
    """Mean over each node's neighbours ``j`` of ``sum_k proba[i, k] proba[j, k]``.

    The probability that node ``i`` and a random neighbour are drawn into the
    same cluster; low values mark nodes whose soft assignment disagrees with
    their neighbourhood. Neighbours are the stored entries of row ``i`` of ``A``
    (edge weights ignored); nodes with no neighbours get NaN.

    Parameters
    ----------
    A : scipy.sparse matrix of shape (n_nodes, n_nodes)
    proba : ndarray of shape (n_nodes, n_clusters)

    Returns
    -------
    ndarray of shape (n_nodes,), float64
    """
    A = check_affinity(A)
    P = np.asarray(proba, dtype=np.float64)
    n = A.shape[0]
    if P.ndim != 2 or P.shape[0] != n:
        raise GraphclustError(f"proba must have shape ({n}, n_clusters), got {P.shape}")
    rows, cols = _edges(A)
    total = np.zeros(n)
    for s in range(0, rows.size, _EDGE_CHUNK):
        r, c = rows[s : s + _EDGE_CHUNK], cols[s : s + _EDGE_CHUNK]
        total += np.bincount(r, weights=np.einsum("ek,ek->e", P[r], P[c]), minlength=n)
    deg = np.diff(A.indptr).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(deg > 0, total / np.maximum(deg, 1), np.nan)


def group_strength(A, groups) -> np.ndarray:
    """Weighted in-degree from the node's own group: ``s_j = sum_{i: g_i = g_j} A[i, j]``.

    A centrality used to rank a group's typical members when there are no
    soft assignments.
    """
    A = check_affinity(A)
    same = edge_groups(A, groups)
    _, cols = _edges(A)
    return np.bincount(cols, weights=A.data * same, minlength=A.shape[0])


def ambiguous_nodes(agreement, n_worst: int = 20) -> Ambiguous:
    """The ``n_worst`` nodes of lowest agreement (ties by node id); NaN scores are skipped."""
    a = np.asarray(agreement, dtype=np.float64)
    valid = np.flatnonzero(np.isfinite(a))
    ranked = valid[np.lexsort((valid, a[valid]))][: max(int(n_worst), 0)]
    return Ambiguous(ranked.astype(np.int64), a[ranked])


def representatives(groups, score, n_per_group: int = 8, n_groups: int | None = None) -> list:
    """Per group, up to ``n_per_group`` members of highest ``score`` (ties by node id).

    Returns
    -------
    list of ndarray
        ``out[g]``: node ids, best first (empty for an empty group).
    """
    s = np.asarray(score, dtype=np.float64)
    g, k = _check_groups(groups, s.shape[0], n_groups)
    order = np.lexsort((np.arange(g.size), -s, g))
    sorted_g = g[order]
    starts = np.searchsorted(sorted_g, np.arange(k), side="left")
    stops = np.searchsorted(sorted_g, np.arange(k), side="right")
    return [order[a : min(b, a + n_per_group)].astype(np.int64) for a, b in zip(starts, stops)]


def top_features(X, groups, n_top: int = 10, n_groups: int | None = None) -> TopFeatures:
    """Features with the largest ``mean over the group - mean over all nodes``.

    Group means come from one sparse product ``Z^T X``. Empty groups get
    differences of ``-overall mean``.
    """
    X = np.asarray(X)
    g, k = _check_groups(groups, X.shape[0], n_groups)
    Z = indicator(g, k)
    sizes = np.maximum(np.bincount(g, minlength=k), 1).astype(np.float64)
    means = np.asarray(Z.T @ X, dtype=np.float64) / sizes[:, None]
    diff = means - X.mean(axis=0, dtype=np.float64)[None, :]
    n_top = min(int(n_top), X.shape[1])
    # stable: largest difference first, ties by feature id
    idx = np.argsort(-diff, axis=1, kind="stable")[:, :n_top]
    return TopFeatures(idx.astype(np.int64), np.take_along_axis(diff, idx, axis=1))


# --------------------------------------------------------------------------- spaces
def subsample(n_nodes: int, max_nodes: int, random_state=0) -> np.ndarray:
    """Sorted node ids: all nodes, or ``max_nodes`` drawn without replacement."""
    if max_nodes < 2:
        raise GraphclustError(f"max_nodes must be at least 2, got {max_nodes}")
    if n_nodes <= max_nodes:
        return np.arange(n_nodes, dtype=np.int64)
    rng = check_random_state(random_state)
    return np.sort(rng.choice(n_nodes, size=max_nodes, replace=False)).astype(np.int64)


def knn_purity_curve(Z, labels, ks=None) -> dict[int, float]:
    """Neighbour purity at several ``k`` of the exact kNN graph of the rows of ``Z``.

    Uses :func:`graphclust.graph.knn.knn_torch` (exact, deterministic). ``ks``
    defaults to 1, 5, 10, 20, 50, 100 below the number of points.
    """
    from graphclust.graph.knn import knn_torch

    n = np.asarray(Z).shape[0]
    if ks is None:
        ks = [k for k in (1, 5, 10, 20, 50, 100) if k < n]
    ks = [int(k) for k in ks]
    if not ks:
        return {}
    res = knn_torch(Z, max(ks))
    return purity_curve(res.indices, labels, ks)


def map_2d(Z, method: str = "pca", random_state=0) -> tuple[np.ndarray, dict]:
    """2-D coordinates of the rows of ``Z`` by PCA (default) or UMAP.

    Returns
    -------
    coords : ndarray of shape (n_points, 2), float64
    info : dict
        ``method`` and, for PCA, ``explained_variance_ratio``.
    """
    Z = np.asarray(Z, dtype=np.float64)
    if Z.ndim != 2 or Z.shape[0] < 3:
        raise GraphclustError(f"a 2-D map needs at least 3 points, got shape {Z.shape}")
    if method == "pca":
        from sklearn.decomposition import PCA

        if Z.shape[1] < 2:
            return np.c_[Z[:, 0], np.zeros(Z.shape[0])], {"method": "pca (1-D data)"}
        pca = PCA(n_components=2, random_state=0)
        coords = pca.fit_transform(Z)
        return coords, {
            "method": "pca",
            "explained_variance_ratio": [float(v) for v in pca.explained_variance_ratio_],
        }
    if method == "umap":
        try:
            import umap
        except ImportError as exc:
            raise GraphclustError(
                "--map umap needs umap-learn: `pip install umap-learn` (or use --map pca)"
            ) from exc
        seed = int(check_random_state(random_state).integers(0, 2**31 - 1))
        reducer = umap.UMAP(n_components=2, random_state=seed, n_neighbors=min(15, Z.shape[0] - 1))
        with warnings.catch_warnings():  # "n_jobs overridden by setting random_state"
            warnings.filterwarnings("ignore", message=".*n_jobs.*", category=UserWarning)
            coords = reducer.fit_transform(Z)
        return np.asarray(coords, dtype=np.float64), {"method": "umap"}
    raise GraphclustError(f"unknown map method {method!r}; expected 'pca' or 'umap'")

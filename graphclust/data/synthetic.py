"""Synthetic and episodic training data for amortised clustering (CHiGac design note, section 3).

The seed's generator (supplementary, "2D MoG data generation")::

    alpha ~ Exp(1);  c_{1:N} ~ CRP(alpha);  mu_k ~ N(0, sigma_mu^2 I);  x_i ~ N(mu_{c_i}, sigma^2 I)

in 2 or ``dim`` dimensions, with the note's constants (``sigma_mu = 10``, ``sigma = 1``, data
sets with more than ``max_clusters`` clusters rejected, Q11).

Pieces:

- :func:`sample_crp`: exact vectorised CRP sampler (independent "new table" draws + a uniform
  earlier customer, resolved by pointer jumping); :func:`sample_crp_sequential` is the textbook
  loop it is tested against.
- :func:`sample_mixture`: one labelled data set as a :class:`MixtureSample` (points shuffled,
  clusters numbered by first appearance, robustly standardised, true parameters kept for the
  oracle labelling :func:`oracle_labels`).
- :func:`standardize`: per-set median centring and pooled-MAD scaling.
- :func:`points_to_data`: points -> PyG ``Data`` with the kNN graph (self-tuning Gaussian
  weights, row-normalised, as DGG) and scale-free edge features ``[log w_ij, d_ij / s_i]``.
- :class:`MixtureEpisodes` / :class:`LabelledEpisodes`: episode sources with
  ``sample(n_graphs, rng) -> Batch`` (generated mixtures; CRP episodes drawn from a labelled
  data set such as Siamese MNIST embeddings, section 3.3).

All randomness comes from a passed ``numpy.random.Generator`` (or seed); nothing touches
NumPy's or PyTorch's global generators.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import numpy as np
import torch
from torch_geometric.data import Batch, Data

from graphclust.graph.affinity import row_normalize, self_tuning_gaussian
from graphclust.graph.graph import KNNGraph
from graphclust.graph.knn import check_k, knn_search
from graphclust.utils import (
    GraphclustError,
    check_features,
    check_labels,
    check_random_state,
)

__all__ = [
    "EDGE_FEATURES",
    "EpisodeSource",
    "LabelledEpisodes",
    "MixtureEpisodes",
    "MixtureSample",
    "Standardized",
    "graph_to_data",
    "oracle_labels",
    "points_to_data",
    "relabel_first_appearance",
    "sample_crp",
    "sample_crp_sequential",
    "sample_mixture",
    "sample_separated_mixture",
    "standardize",
]

#: names of the columns of ``Data.edge_attr``
EDGE_FEATURES = ("log_weight", "scaled_distance")
_LOG_W_FLOOR = 1e-6
_MAX_REJECTIONS = 1000


# --------------------------------------------------------------------------- CRP
def _check_alpha(alpha: Any) -> np.ndarray:
    a = np.asarray(alpha, dtype=np.float64)
    if not np.all(np.isfinite(a)) or np.any(a <= 0):
        raise GraphclustError(f"the CRP concentration alpha must be finite and > 0, got {alpha!r}")
    return a


def _check_n(n: Any, name: str = "n_samples", minimum: int = 1) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < minimum:
        raise GraphclustError(f"{name} must be an integer >= {minimum}, got {n!r}")
    return int(n)


def sample_crp(n: int, alpha: float | np.ndarray, random_state=None,
               size: int | None = None) -> np.ndarray:
    """Exact Chinese-restaurant-process partitions, vectorised.

    Customer ``t`` (1-based) opens a new table with probability ``alpha / (alpha + t - 1)``,
    independently of the others; otherwise it sits with a uniformly chosen earlier customer
    (given "not new", table ``c`` then has probability ``n_c / (t - 1)``, the CRP law).
    Tables are resolved by pointer jumping (``parent <- parent[parent]``), ``O(n log n)``.

    Parameters
    ----------
    n : int
        Customers (points), ``n >= 1``.
    alpha : float or ndarray of shape (size,)
        Concentration(s), ``> 0``.
    random_state : int, numpy Generator or None
    size : int, optional
        Number of independent partitions; ``None`` gives one ``(n,)`` array.

    Returns
    -------
    ndarray of shape (n,) or (size, n), int64
        Table of each customer, numbered ``0, 1, ...`` in order of first appearance.
    """
    n = _check_n(n)
    rng = check_random_state(random_state)
    a = _check_alpha(alpha)
    m = 1 if size is None else _check_n(size, "size")
    if a.ndim == 0:
        a = np.full((m, 1), float(a))
    elif a.shape == (m,):
        a = a.reshape(m, 1)
    else:
        raise GraphclustError(f"alpha has shape {a.shape}; expected a scalar or ({m},)")
    t = np.arange(n, dtype=np.float64)  # t - 1 for customers t = 1..n
    new = rng.random((m, n)) < a / (a + t)
    new[:, 0] = True
    # a uniform earlier customer in [0, t - 1) for each customer t >= 2
    parent = np.floor(rng.random((m, n)) * np.maximum(t, 1)).astype(np.int64)
    parent = np.where(new, np.arange(n), parent)
    rows = np.arange(m)[:, None]
    while True:  # pointer jumping: every chain ends at the customer who opened the table
        nxt = parent[rows, parent]
        if np.array_equal(nxt, parent):
            break
        parent = nxt
    table = np.cumsum(new, axis=1) - 1  # opener t -> table number in order of opening
    labels = table[rows, parent]
    return labels[0] if size is None else labels


def sample_crp_sequential(n: int, alpha: float, random_state=None) -> np.ndarray:
    """The textbook sequential CRP (the reference for :func:`sample_crp`).

    Returns
    -------
    ndarray of shape (n,), int64, tables in order of first appearance.
    """
    n = _check_n(n)
    a = float(_check_alpha(alpha))
    rng = check_random_state(random_state)
    labels = np.empty(n, dtype=np.int64)
    counts: list[int] = []
    for t in range(n):
        p = np.array(counts + [a], dtype=np.float64) / (t + a)
        c = int(rng.choice(len(p), p=p))
        if c == len(counts):
            counts.append(1)
        else:
            counts[c] += 1
        labels[t] = c
    return labels


def relabel_first_appearance(labels: np.ndarray) -> np.ndarray:
    """Renumber clusters ``0, 1, ...`` in order of first appearance along the array."""
    lab = np.asarray(labels)
    _, first, inverse = np.unique(lab, return_index=True, return_inverse=True)
    rank = np.empty(first.size, dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(first.size)
    return rank[inverse.ravel()]


# --------------------------------------------------------------------------- mixtures
class Standardized(NamedTuple):
    """Result of :func:`standardize`: ``x = (raw - center) / scale``.

    Attributes
    ----------
    x : ndarray of shape (n_samples, n_features), float32
    center : ndarray of shape (n_features,), float64
    scale : float
    """

    x: np.ndarray
    center: np.ndarray
    scale: float


def standardize(X: np.ndarray) -> Standardized:
    """Subtract the per-set median and divide by the pooled MAD (times 1.4826).

    The scale is one number for all features, taken over every entry of ``|X - median|``,
    so it does not depend on the kNN distances (which shrink as ``n`` grows). A zero MAD
    (e.g. all points identical) falls back to the standard deviation, then to 1.
    """
    Xf = np.asarray(X, dtype=np.float64)
    center = np.median(Xf, axis=0)
    dev = np.abs(Xf - center)
    scale = 1.4826 * float(np.median(dev))
    if not scale > 0:
        scale = float(np.std(Xf))
    if not scale > 0:
        scale = 1.0
    return Standardized(((Xf - center) / scale).astype(np.float32), center, scale)


@dataclass(frozen=True, eq=False)
class MixtureSample:
    """One labelled data set drawn by :func:`sample_mixture`.

    Attributes
    ----------
    x : ndarray of shape (n_samples, dim), float32
        Points, standardised when asked (see ``center``/``scale``).
    y : ndarray of shape (n_samples,), int64
        True cluster of each point, ``0..K-1`` in order of first appearance.
    means : ndarray of shape (K, dim), float64
        Cluster centres in the raw (unstandardised) space; row ``k`` is cluster ``k``.
    sigma : float
        Within-cluster standard deviation (raw space).
    proportions : ndarray of shape (K,), float64
        Cluster sizes over ``n_samples``.
    alpha : float
        The CRP concentration drawn for this set.
    center : ndarray of shape (dim,)
        Subtracted from the raw points (zeros without standardisation).
    scale : float
        Divided into the centred points (1 without standardisation).
    """

    x: np.ndarray
    y: np.ndarray
    means: np.ndarray
    sigma: float
    proportions: np.ndarray
    alpha: float
    center: np.ndarray
    scale: float

    @property
    def n_clusters(self) -> int:
        return int(self.means.shape[0])

    @property
    def raw(self) -> np.ndarray:
        """The points in the raw space, ``(n_samples, dim)`` float64."""
        return self.x.astype(np.float64) * self.scale + self.center


def _positive(name: str, value: Any) -> float:
    v = float(value)
    if not np.isfinite(v) or v <= 0:
        raise GraphclustError(f"{name} must be a finite number > 0, got {value!r}")
    return v


def sample_mixture(
    n: int,
    dim: int = 2,
    random_state=None,
    *,
    alpha: float | None = None,
    sigma_mu: float = 10.0,
    sigma: float = 1.0,
    max_clusters: int | None = 30,
    standardize_points: bool = True,
) -> MixtureSample:
    """Draw one data set from the seed's CRP mixture of Gaussians.

    ``alpha ~ Exp(1)`` (unless given), ``c ~ CRP(alpha)``, ``mu_k ~ N(0, sigma_mu^2 I)``,
    ``x_i ~ N(mu_{c_i}, sigma^2 I)``; the points are then shuffled uniformly and the clusters
    numbered by first appearance (cluster 0 is that of the first point: a size-biased order),
    and finally standardised (:func:`standardize`).

    A partition with more than ``max_clusters`` clusters is rejected and ``alpha`` and the
    partition are drawn again, so the result is exact given ``K <= max_clusters``.

    Parameters
    ----------
    n : int
        Points, ``>= 1``.
    dim : int
        Dimension (2 in the seed).
    random_state : int, numpy Generator or None
    alpha : float, optional
        Fixed concentration instead of ``Exp(1)`` draws.
    sigma_mu, sigma : float
        Spread of the centres and within clusters.
    max_clusters : int or None
        Rejection cap on ``K`` (None: no cap).
    standardize_points : bool
        Median-centre and MAD-scale the points.

    Returns
    -------
    MixtureSample
    """
    n = _check_n(n)
    dim = _check_n(dim, "dim")
    sigma_mu, sigma = _positive("sigma_mu", sigma_mu), _positive("sigma", sigma)
    if max_clusters is not None:
        max_clusters = _check_n(max_clusters, "max_clusters")
    rng = check_random_state(random_state)
    for _ in range(_MAX_REJECTIONS):
        a = float(rng.exponential(1.0)) if alpha is None else float(_check_alpha(alpha))
        if a <= 0:  # exponential(1) can return exactly 0 with negligible probability
            continue
        c = sample_crp(n, a, rng)
        K = int(c.max()) + 1
        if max_clusters is None or K <= max_clusters:
            break
    else:
        raise GraphclustError(
            f"could not draw a partition of {n} points with at most {max_clusters} clusters in "
            f"{_MAX_REJECTIONS} tries; raise max_clusters or lower alpha"
        )
    means = rng.normal(0.0, sigma_mu, size=(K, dim))
    return _assemble(means, c, sigma, a, rng, standardize_points)


def _assemble(means: np.ndarray, c: np.ndarray, sigma: float, alpha: float,
              rng: np.random.Generator, standardize_points: bool) -> MixtureSample:
    """Draw the points of partition ``c`` around ``means``, shuffle, relabel, standardise."""
    n, dim = c.size, means.shape[1]
    K = means.shape[0]
    raw = means[c] + rng.normal(0.0, sigma, size=(n, dim))
    perm = rng.permutation(n)
    raw, c = raw[perm], c[perm]
    y = relabel_first_appearance(c)
    old_of_new = np.empty(K, dtype=np.int64)
    old_of_new[y] = c
    means = means[old_of_new]
    props = np.bincount(y, minlength=K) / n
    if standardize_points:
        st = standardize(raw)
        x, center, scale = st.x, st.center, st.scale
    else:
        x, center, scale = raw.astype(np.float32), np.zeros(dim), 1.0
    return MixtureSample(x, y, means, sigma, props, alpha, center, scale)


def sample_separated_mixture(
    n: int,
    n_clusters: int = 3,
    dim: int = 2,
    random_state=None,
    *,
    min_separation: float = 15.0,
    sigma_mu: float = 10.0,
    sigma: float = 1.0,
    standardize_points: bool = True,
) -> MixtureSample:
    """Draw well-separated blobs: the design note's check S1 (section 8.2).

    ``n_clusters`` centres ``mu_k ~ N(0, sigma_mu^2 I)`` are redrawn until every pair is at
    least ``min_separation * sigma`` apart; each point picks a cluster uniformly at random
    (every cluster gets at least one point) and is drawn from ``N(mu_k, sigma^2 I)``. The
    points are shuffled, numbered by first appearance and standardised as in
    :func:`sample_mixture`; ``alpha`` is recorded as NaN (no CRP is involved).

    Parameters
    ----------
    n : int
        Points, ``>= n_clusters``.
    n_clusters : int
        ``K``, ``>= 1``.
    dim : int
    random_state : int, numpy Generator or None
    min_separation : float
        Smallest distance between two centres, in units of ``sigma`` (> 0).
    sigma_mu, sigma : float
    standardize_points : bool

    Returns
    -------
    MixtureSample

    Raises
    ------
    GraphclustError
        When ``n < n_clusters`` or the centres cannot be placed (separation too large for
        ``sigma_mu`` and ``dim``).
    """
    K = _check_n(n_clusters, "n_clusters")
    n = _check_n(n, minimum=K)
    dim = _check_n(dim, "dim")
    sigma_mu, sigma = _positive("sigma_mu", sigma_mu), _positive("sigma", sigma)
    sep = _positive("min_separation", min_separation) * sigma
    rng = check_random_state(random_state)
    for _ in range(_MAX_REJECTIONS):
        means = rng.normal(0.0, sigma_mu, size=(K, dim))
        d = np.linalg.norm(means[:, None] - means[None], axis=-1)
        if K == 1 or d[np.triu_indices(K, 1)].min() >= sep:
            break
    else:
        raise GraphclustError(
            f"could not place {K} centres {min_separation} sigma apart with sigma_mu={sigma_mu} "
            f"in {dim} dimensions in {_MAX_REJECTIONS} tries; raise sigma_mu or lower "
            "min_separation"
        )
    c = np.concatenate([np.arange(K), rng.integers(0, K, size=n - K)])
    return _assemble(means, c, sigma, float("nan"), rng, standardize_points)


def oracle_labels(sample: MixtureSample) -> np.ndarray:
    """MAP clustering under the true parameters (the "oracle ARI" ceiling).

    ``argmax_k log pi_k - ||x - mu_k||^2 / (2 sigma^2)`` with ``pi`` the true proportions.
    """
    raw = sample.raw
    d2 = ((raw[:, None, :] - sample.means[None]) ** 2).sum(-1)
    score = np.log(sample.proportions)[None] - d2 / (2 * sample.sigma**2)
    return np.argmax(score, axis=1).astype(np.int64)


# --------------------------------------------------------------------------- graphs
def _edge_features(distances: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``[log max(w_ij, 1e-6), d_ij / s_i]`` per edge, ``s_i`` = distance to the last neighbour."""
    bw = distances[:, -1:].astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        scaled = np.where(bw > 0, distances / np.where(bw > 0, bw, 1.0), 0.0)
    logw = np.log(np.maximum(weights.astype(np.float64), _LOG_W_FLOOR))
    return np.stack([logw.ravel(), scaled.ravel()], axis=1).astype(np.float32)


def graph_to_data(x: np.ndarray, graph: KNNGraph | None, y: np.ndarray | None = None) -> Data:
    """A PyG ``Data`` from (standardised) points and their kNN graph.

    The weights are recomputed from the graph's distances with the self-tuning Gaussian
    kernel and row-normalised, whatever kernel the graph was saved with, so a model sees
    the same edge features it was trained on.

    Parameters
    ----------
    x : ndarray of shape (n_nodes, dim)
    graph : KNNGraph or None
        ``None`` only for a single point (no edges).
    y : ndarray of shape (n_nodes,), optional
        True clusters in order of first appearance (training targets).

    Returns
    -------
    torch_geometric.data.Data
        ``x`` (n, dim) float32, ``edge_index`` (2, n k) int64 (row 0 the neighbour),
        ``edge_attr`` (n k, 2) float32 (:data:`EDGE_FEATURES`), optional ``y`` (n,) int64
        and ``num_clusters`` (1,).
    """
    n = x.shape[0]
    if graph is None:
        if n != 1:
            raise GraphclustError(f"a graph is needed for {n} points (only a single point has none)")
        edge_index = torch.zeros((2, 0), dtype=torch.long)
        edge_attr = torch.zeros((0, len(EDGE_FEATURES)), dtype=torch.float32)
    else:
        if graph.n_nodes != n:
            raise GraphclustError(
                f"the graph has {graph.n_nodes} nodes but there are {n} points; build the graph "
                "for these points"
            )
        w = row_normalize(self_tuning_gaussian(graph.distances))
        k = graph.k
        dst = np.repeat(np.arange(n, dtype=np.int64), k)
        edge_index = torch.from_numpy(np.stack([graph.indices.ravel(), dst]))
        edge_attr = torch.from_numpy(_edge_features(graph.distances, w))
    data = Data(x=torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)),
                edge_index=edge_index, edge_attr=edge_attr, num_nodes=n)
    if y is not None:
        yy = torch.as_tensor(np.asarray(y), dtype=torch.long)
        data.y = yy
        data.num_clusters = torch.tensor([int(yy.max()) + 1 if n else 0])
    return data


def points_to_data(x: np.ndarray, n_neighbors: int = 15, y: np.ndarray | None = None,
                   knn_method: str = "exact", device: str = "cpu") -> Data:
    """Build the kNN graph of (standardised) points and return it as a PyG ``Data``.

    Parameters
    ----------
    x : array of shape (n_nodes, dim)
        Finite points, already standardised (:func:`standardize`).
    n_neighbors : int
        ``J``, neighbours per node, ``1 <= J < n_nodes``; a single point needs no graph.
    y : array of shape (n_nodes,), optional
    knn_method, device :
        Passed to :func:`graphclust.graph.knn.knn_search`.

    Raises
    ------
    GraphclustError
        On NaN/inf points or ``J >= n_nodes`` (for ``n_nodes > 1``).
    """
    xx = check_features(x, min_samples=1)
    n = xx.shape[0]
    if n == 1:
        return graph_to_data(xx, None, y)
    J = check_k(n_neighbors, n)
    knn = knn_search(xx, J, method=knn_method, device=device)
    graph = KNNGraph(knn.indices, np.ones_like(knn.distances), knn.distances)
    return graph_to_data(xx, graph, y)


# --------------------------------------------------------------------------- episodes
class EpisodeSource(Protocol):
    """Anything :func:`~graphclust.models.chigac_estimator.train_chigac` can draw batches from."""

    n_features: int

    def sample(self, n_graphs: int, rng: np.random.Generator) -> Batch:
        """``n_graphs`` labelled data sets as one PyG ``Batch`` (``x, y, edge_index,
        edge_attr, batch, ptr, num_clusters``)."""
        ...

    def describe(self) -> dict[str, Any]:
        """JSON-serialisable settings (for configs)."""
        ...


def _check_range(n_range: Any) -> tuple[int, int]:
    try:
        lo, hi = (int(v) for v in n_range)
    except (TypeError, ValueError):
        raise GraphclustError(f"n_range must be two integers (min, max), got {n_range!r}") from None
    if lo < 2 or hi < lo:
        raise GraphclustError(f"n_range must satisfy 2 <= min <= max, got {n_range!r}")
    return lo, hi


@dataclass(frozen=True)
class MixtureEpisodes:
    """Episodes from the seed's CRP mixture of Gaussians (:func:`sample_mixture`).

    Parameters
    ----------
    dim : int
        Dimension of the points.
    n_range : (int, int)
        Points per data set, uniform on ``{min, ..., max}``.
    sigma_mu, sigma : float
    max_clusters : int
        Reject data sets with more clusters.
    n_neighbors : int
        ``J`` of every episode's kNN graph (must be < ``n_range[0]``).
    alpha : float, optional
        Fixed concentration instead of ``Exp(1)``.
    """

    dim: int = 2
    n_range: tuple[int, int] = (50, 300)
    sigma_mu: float = 10.0
    sigma: float = 1.0
    max_clusters: int = 30
    n_neighbors: int = 15
    alpha: float | None = None

    def __post_init__(self) -> None:
        _check_n(self.dim, "dim")
        lo, _ = _check_range(self.n_range)
        _positive("sigma_mu", self.sigma_mu)
        _positive("sigma", self.sigma)
        _check_n(self.max_clusters, "max_clusters")
        if _check_n(self.n_neighbors, "n_neighbors") >= lo:
            raise GraphclustError(
                f"n_neighbors={self.n_neighbors} must be smaller than the smallest episode "
                f"({lo} points); raise n_range[0] or lower n_neighbors"
            )
        if self.alpha is not None:
            _check_alpha(self.alpha)

    @property
    def n_features(self) -> int:
        return int(self.dim)

    def sample_one(self, rng: np.random.Generator) -> Data:
        lo, hi = self.n_range
        n = int(rng.integers(lo, hi + 1))
        s = sample_mixture(n, self.dim, rng, alpha=self.alpha, sigma_mu=self.sigma_mu,
                           sigma=self.sigma, max_clusters=self.max_clusters)
        return points_to_data(s.x, self.n_neighbors, s.y)

    def sample(self, n_graphs: int, rng: np.random.Generator) -> Batch:
        rng = check_random_state(rng)
        return Batch.from_data_list([self.sample_one(rng) for _ in range(_check_n(n_graphs, "n_graphs"))])

    def describe(self) -> dict[str, Any]:
        return {"kind": "mixture", "dim": self.dim, "n_range": list(self.n_range),
                "sigma_mu": self.sigma_mu, "sigma": self.sigma,
                "max_clusters": self.max_clusters, "n_neighbors": self.n_neighbors,
                "alpha": self.alpha}


@dataclass(frozen=True, eq=False)
class LabelledEpisodes:
    """CRP episodes drawn from a labelled data set (design note section 3.3).

    Each episode: ``N ~ U{min..max}``, ``alpha ~ Exp(1)``, a CRP partition of ``N`` with at
    most ``min(max_clusters, n_classes)`` clusters (rejected otherwise), a distinct random
    class per cluster and its points drawn without replacement (rejected when a class has
    too few); the points are standardised and get their own kNN graph.

    Parameters
    ----------
    X : array of shape (n_samples, n_features)
    y : array of shape (n_samples,)
        Class labels.
    n_range : (int, int)
    n_neighbors : int
    max_clusters : int, optional
    """

    X: np.ndarray
    y: np.ndarray
    n_range: tuple[int, int] = (100, 2000)
    n_neighbors: int = 20
    max_clusters: int | None = None
    _by_class: list = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        X = check_features(self.X)
        y = check_labels(self.y, X.shape[0])
        object.__setattr__(self, "X", X)
        object.__setattr__(self, "y", y)
        lo, hi = _check_range(self.n_range)
        if _check_n(self.n_neighbors, "n_neighbors") >= lo:
            raise GraphclustError(
                f"n_neighbors={self.n_neighbors} must be smaller than the smallest episode ({lo})"
            )
        classes = np.unique(y)
        if classes.size < 1:
            raise GraphclustError("y holds no classes")
        if hi > X.shape[0]:
            raise GraphclustError(
                f"episodes of up to {hi} points cannot be drawn from {X.shape[0]} samples; "
                "lower n_range"
            )
        object.__setattr__(self, "_by_class", [np.flatnonzero(y == c) for c in classes])

    @property
    def n_features(self) -> int:
        return int(self.X.shape[1])

    def sample_one(self, rng: np.random.Generator) -> Data:
        lo, hi = self.n_range
        n_classes = len(self._by_class)
        cap = n_classes if self.max_clusters is None else min(n_classes, int(self.max_clusters))
        for _ in range(_MAX_REJECTIONS):
            n = int(rng.integers(lo, hi + 1))
            alpha = float(rng.exponential(1.0))
            if alpha <= 0:
                continue
            c = sample_crp(n, alpha, rng)
            K = int(c.max()) + 1
            if K > cap:
                continue
            sizes = np.bincount(c, minlength=K)
            classes = rng.permutation(n_classes)[:K]
            if any(sizes[k] > self._by_class[classes[k]].size for k in range(K)):
                continue
            idx = np.empty(n, dtype=np.int64)
            for k in range(K):
                pool = self._by_class[classes[k]]
                idx[c == k] = pool[rng.choice(pool.size, size=sizes[k], replace=False)]
            perm = rng.permutation(n)
            x = standardize(self.X[idx[perm]]).x
            return points_to_data(x, self.n_neighbors, relabel_first_appearance(c[perm]))
        raise GraphclustError(
            f"could not draw an episode with at most {cap} clusters in {_MAX_REJECTIONS} tries; "
            "lower n_range or check the class sizes"
        )

    def sample(self, n_graphs: int, rng: np.random.Generator) -> Batch:
        rng = check_random_state(rng)
        return Batch.from_data_list([self.sample_one(rng) for _ in range(_check_n(n_graphs, "n_graphs"))])

    def describe(self) -> dict[str, Any]:
        return {"kind": "labelled", "n_samples": int(self.X.shape[0]),
                "n_features": self.n_features, "n_classes": len(self._by_class),
                "n_range": list(self.n_range), "n_neighbors": self.n_neighbors,
                "max_clusters": self.max_clusters}

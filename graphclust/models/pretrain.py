"""Pretraining shared by the mixture models: (denoising) autoencoder, prior init, head.

1. :func:`pretrain_autoencoder` trains encoder means + decoder as a denoising AE.
2. An *initialiser* clusters the latent means and returns :class:`InitResult` (labels and a
   diagonal GMM in the latent space): :class:`GMMInit` (sklearn ``GaussianMixture``, diag,
   the DGG/VaDE recipe) or :class:`UMAPGMMInit` (UMAP + full GMM labels, the N2D recipe;
   design note section 9: the starting point dominates). Any callable
   ``(latent, n_clusters, random_state) -> InitResult`` can be injected.
3. :func:`apply_init` sets the prior; :func:`pretrain_head` fits the classifier head on the
   initial labels.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch
from tqdm.auto import tqdm

from graphclust.models.mixture import GMVAE, ClassifierHead
from graphclust.utils import GraphclustError, SubnormalGuard

__all__ = [
    "CONSENSUS_METRICS",
    "INIT_NAMES",
    "GMMInit",
    "InitResult",
    "LabelsInit",
    "UMAPGMMInit",
    "adam_epochs",
    "apply_init",
    "check_cluster_labels",
    "fit_to_labels",
    "latent_means",
    "merge_along_graph",
    "moments_from_labels",
    "named_init",
    "pretrain_autoencoder",
    "pretrain_head",
    "run_init",
    "umap_embed",
    "umap_gmm_labels",
    "umap_gmm_runs",
]


class InitResult(NamedTuple):
    """A clustering of the latent space used to start a mixture model.

    Attributes
    ----------
    labels : ndarray of shape (n_samples,), int64
    means : ndarray of shape (n_clusters, latent_dim)
    variances : ndarray of shape (n_clusters, latent_dim)
        Diagonal variances in the latent space.
    weights : ndarray of shape (n_clusters,)
    """

    labels: np.ndarray
    means: np.ndarray
    variances: np.ndarray
    weights: np.ndarray


Initializer = Callable[[np.ndarray, int, int], InitResult]


def moments_from_labels(
    latent: np.ndarray, labels: np.ndarray, n_clusters: int, min_var: float = 1e-4
) -> InitResult:
    """Per-cluster means and diagonal variances of ``latent`` under hard ``labels``.

    An empty cluster gets the global mean/variance and a tiny weight.
    """
    latent = np.asarray(latent, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    M = latent.shape[1]
    means = np.tile(latent.mean(0), (n_clusters, 1))
    variances = np.tile(latent.var(0) + min_var, (n_clusters, 1))
    counts = np.bincount(labels, minlength=n_clusters)[:n_clusters].astype(np.float64)
    for k in np.flatnonzero(counts):
        rows = latent[labels == k]
        means[k] = rows.mean(0)
        variances[k] = rows.var(0) + min_var if len(rows) > 1 else variances[k]
    weights = np.maximum(counts, 1e-3) / max(counts.sum(), 1.0)
    weights /= weights.sum()
    return InitResult(
        labels, means.astype(np.float32), variances.astype(np.float32).reshape(n_clusters, M),
        weights.astype(np.float32),
    )


class GMMInit:
    """Fit ``sklearn.mixture.GaussianMixture`` on the latent means.

    Parameters
    ----------
    covariance_type : {"diag", "full"}
        ``diag`` gives the prior directly; with ``full`` the labels are kept and the prior
        is the per-cluster diagonal moments.
    n_init : int
    max_iter : int
    reg_covar : float
    """

    def __init__(
        self, covariance_type: str = "diag", n_init: int = 3, max_iter: int = 200,
        reg_covar: float = 1e-6,
    ) -> None:
        self.covariance_type, self.n_init = covariance_type, int(n_init)
        self.max_iter, self.reg_covar = int(max_iter), float(reg_covar)

    def __repr__(self) -> str:
        return (
            f"GMMInit(covariance_type={self.covariance_type!r}, n_init={self.n_init}, "
            f"max_iter={self.max_iter}, reg_covar={self.reg_covar})"
        )

    def __call__(self, latent: np.ndarray, n_clusters: int, random_state: int) -> InitResult:
        from sklearn.mixture import GaussianMixture

        gmm = GaussianMixture(
            n_components=n_clusters, covariance_type=self.covariance_type, n_init=self.n_init,
            max_iter=self.max_iter, reg_covar=self.reg_covar,
            random_state=int(random_state) % 2**32,
        )
        labels = gmm.fit_predict(np.asarray(latent, dtype=np.float64)).astype(np.int64)
        if self.covariance_type != "diag":
            return moments_from_labels(latent, labels, n_clusters)
        return InitResult(
            labels,
            gmm.means_.astype(np.float32),
            gmm.covariances_.astype(np.float32),
            gmm.weights_.astype(np.float32),
        )


def umap_embed(features: np.ndarray, n_components: int = 10, n_neighbors: int = 20,
               min_dist: float = 0.0, random_state: int = 0,
               metric: str = "euclidean") -> np.ndarray:
    """UMAP of ``features`` (seeded), the N2D recipe's reduction; needs umap-learn.

    ``n_components`` and ``n_neighbors`` are capped for tiny inputs (``n - 2`` and
    ``n - 1``); ``metric`` is UMAP's input metric. Returns a float32 array of shape
    (n_samples, n_components).
    """
    try:
        import umap
    except ImportError as exc:
        raise GraphclustError(
            "UMAP needs umap-learn: `pip install umap-learn` (or graphclust[umap]); "
            "for a DGG start, init='gmm' needs nothing more"
        ) from exc
    features = np.asarray(features, dtype=np.float32)
    n = features.shape[0]
    reducer = umap.UMAP(
        n_components=min(int(n_components), n - 2), n_neighbors=min(int(n_neighbors), n - 1),
        min_dist=float(min_dist), random_state=int(random_state) % 2**31, metric=metric,
        n_jobs=1,  # a seeded UMAP is single-threaded anyway; saying so silences its warning
    )
    return np.asarray(reducer.fit_transform(features), dtype=np.float32)


class UMAPGMMInit:
    """UMAP of the latent means + a full-covariance GMM: labels of the N2D recipe.

    The prior is set to the per-cluster diagonal moments of the *latent* means under those
    labels (the head, pretrained on the labels, carries most of the clustering).

    Parameters
    ----------
    n_components : int
        UMAP output dimension (design note section 9: 10).
    n_neighbors : int or sequence of int
    min_dist : float
    covariance_type : str
        Of the GMM in UMAP space.
    n_init : int
        GMM restarts; the fit with the highest likelihood is kept (scikit-learn's
        ``n_init``). One fit can settle in a poor local optimum: on COIL-20's pixel UMAP
        (seed 0) one restart scores 0.852 ACC and the best of ten 0.890.
    space : {"latent", "input"}
        What UMAP embeds: the AE latent means (N2D) or the input features. ``input`` suits
        small image sets where the AE has little data (COIL-20: UMAP of the pixels clusters
        at 0.85-0.89 ACC, of a 1,440-image AE's latent at 0.77); the prior is still the
        latent moments under the labels.
    metric : str or sequence of str
        UMAP's input metric(s), e.g. ``"euclidean"``, ``"cosine"``, ``"correlation"``.
    verbose : bool
        A progress bar over the runs of an ensemble.

    Notes
    -----
    With several ``n_neighbors`` or metrics, every (``n_neighbors``, ``metric``) pair gets
    its own UMAP + GMM run (with its own seed drawn from ``random_state``) and the start is
    their consensus, :func:`~graphclust.models.consensus.coassociation_labels`. In a scratch
    check on COIL-20's pixels (three seeds, three GMM restarts), single runs scored 0.77 to
    0.92 ACC with the seed, the neighbourhood and the metric; the consensus of nine
    (``n_neighbors`` 3, 4, 5 with three metrics) 0.92-0.94 (BENCHMARKS.md, COIL-20).
    """

    def __init__(
        self, n_components: int = 10, n_neighbors=20, min_dist: float = 0.0,
        covariance_type: str = "full", space: str = "latent", n_init: int = 1,
        metric="euclidean", verbose: bool = False,
    ) -> None:
        if space not in ("latent", "input"):
            raise GraphclustError(f"UMAPGMMInit space must be 'latent' or 'input', got {space!r}")
        if isinstance(n_init, bool) or not isinstance(n_init, (int, np.integer)) or n_init < 1:
            raise GraphclustError(f"UMAPGMMInit n_init must be an integer >= 1, got {n_init!r}")
        self.n_init = int(n_init)
        self.n_components = int(n_components)
        self.n_neighbors = _one_or_tuple(n_neighbors, "n_neighbors", int)
        self.metric = _one_or_tuple(metric, "metric", str)
        self.min_dist, self.covariance_type = float(min_dist), covariance_type
        self.space = space
        self.verbose = bool(verbose)

    @property
    def uses_data(self) -> bool:
        """Whether :func:`run_init` must hand it the input features."""
        return self.space == "input"

    def __repr__(self) -> str:
        # defaults are left out, so stage fingerprints of earlier runs stay valid
        space = "" if self.space == "latent" else f", space={self.space!r}"
        n_init = "" if self.n_init == 1 else f", n_init={self.n_init}"
        metric = "" if self.metric == "euclidean" else f", metric={self.metric!r}"
        return (
            f"UMAPGMMInit(n_components={self.n_components}, n_neighbors={self.n_neighbors}, "
            f"min_dist={self.min_dist}, covariance_type={self.covariance_type!r}{space}{n_init}"
            f"{metric})"
        )

    def __call__(self, latent: np.ndarray, n_clusters: int, random_state: int,
                 data: np.ndarray | None = None) -> InitResult:
        if self.space == "input" and data is None:
            raise GraphclustError("UMAPGMMInit(space='input') needs the input features (data=X)")
        features = latent if self.space == "latent" else data
        if features.shape[0] != latent.shape[0]:
            raise GraphclustError(
                f"data has {features.shape[0]} rows but the latent means {latent.shape[0]}")
        labels = umap_gmm_labels(
            features, n_clusters, random_state, n_components=self.n_components,
            n_neighbors=self.n_neighbors, min_dist=self.min_dist,
            covariance_type=self.covariance_type, n_init=self.n_init, metric=self.metric,
            verbose=self.verbose)
        return moments_from_labels(latent, labels, n_clusters)


def _one_or_tuple(value, name: str, kind: type):
    """``value`` itself when it is one ``kind``, else a non-empty tuple of them."""
    def ok(v) -> bool:
        return not isinstance(v, bool) and (
            isinstance(v, kind) or (kind is int and isinstance(v, np.integer)))

    if ok(value):
        return kind(value)
    items = tuple(value) if isinstance(value, (list, tuple)) else ()
    if not items or not all(ok(v) for v in items):
        raise GraphclustError(f"{name} must be one {kind.__name__} or a non-empty list of "
                              f"them, got {value!r}")
    return tuple(kind(v) for v in items)


def _as_tuple(value) -> tuple:
    return value if isinstance(value, tuple) else (value,)


def umap_gmm_runs(
    features: np.ndarray, n_clusters: int, random_state: int, n_components: int = 10,
    n_neighbors=20, min_dist: float = 0.0, covariance_type: str = "full",
    n_init: int = 1, metric="euclidean", verbose: bool = False,
) -> np.ndarray:
    """One UMAP + GMM clustering of ``features`` per (``n_neighbors``, ``metric``) pair.

    ``n_neighbors`` and ``metric`` are each one value or a list; the pairs run in the order
    of ``itertools.product(n_neighbors, metric)``. A single pair is seeded with
    ``random_state`` itself; several get seeds drawn from ``random_state`` and their position
    (``numpy.random.SeedSequence``). ``verbose`` shows a progress bar over the runs.

    Returns
    -------
    label_sets : ndarray of int64, shape (n_runs, n_samples)
    """
    from itertools import product

    from sklearn.mixture import GaussianMixture

    def one_run(nn: int, metric_: str, seed: int) -> np.ndarray:
        emb = umap_embed(features, n_components, nn, min_dist, seed, metric=metric_)
        # UMAP with min_dist 0 can pack a small cluster into a point; scikit-learn's default
        # covariance floor (1e-6) then fails, so the floor is raised until the fit works
        for reg_covar in (1e-6, 1e-4, 1e-2):
            gmm = GaussianMixture(n_components=n_clusters, covariance_type=covariance_type,
                                  random_state=seed, n_init=int(n_init), reg_covar=reg_covar)
            try:
                return gmm.fit_predict(emb).astype(np.int64)
            except ValueError as exc:
                if "ill-defined empirical covariance" not in str(exc):
                    raise
        raise GraphclustError(
            f"the GMM of the UMAP embedding (n_neighbors={nn}, metric={metric_!r}) has "
            f"collapsed components even with reg_covar 1e-2: too few rows per cluster "
            f"({features.shape[0]} rows, {n_clusters} clusters)? Try fewer clusters or a "
            f"larger n_neighbors")

    grid = list(product(_as_tuple(_one_or_tuple(n_neighbors, "n_neighbors", int)),
                        _as_tuple(_one_or_tuple(metric, "metric", str))))
    if len(grid) == 1:
        return one_run(*grid[0], int(random_state) % 2**31)[None]
    root = int(random_state) % 2**63
    seeds = [int(np.random.SeedSequence([root, i]).generate_state(1)[0]) % 2**31
             for i in range(len(grid))]
    bar = tqdm(grid, desc="UMAP + GMM runs", unit="run", leave=False, disable=not verbose)
    return np.stack([one_run(nn, metric_, seed) for (nn, metric_), seed in zip(bar, seeds)])


def umap_gmm_labels(
    features: np.ndarray, n_clusters: int, random_state: int, n_components: int = 10,
    n_neighbors=20, min_dist: float = 0.0, covariance_type: str = "full",
    n_init: int = 1, metric="euclidean", verbose: bool = False,
) -> np.ndarray:
    """Labels of a GMM fitted to a UMAP embedding of ``features`` (the N2D clustering).

    The clustering of :class:`UMAPGMMInit`, usable on any features: the AE latent, the input,
    or another embedding such as a Siamese network's (then passed on as
    :class:`LabelsInit`). ``n_init`` GMM restarts keep the most likely fit.

    ``n_neighbors`` and ``metric`` may each be a list: then every pair of the two gets its
    own run (:func:`umap_gmm_runs`) and the labels are the runs' consensus
    (:func:`~graphclust.models.consensus.coassociation_labels`).

    Returns
    -------
    labels : ndarray of int64, shape (n_samples,)
    """
    from graphclust.models.consensus import coassociation_labels

    runs = umap_gmm_runs(features, n_clusters, random_state, n_components, n_neighbors,
                         min_dist, covariance_type, n_init, metric, verbose)
    return runs[0] if runs.shape[0] == 1 else coassociation_labels(runs, n_clusters)


def merge_along_graph(
    labels, neighbors, n_clusters: int, weights=None,
) -> np.ndarray:
    """Merge a fine clustering into ``n_clusters`` groups along a kNN graph.

    Average linkage on the clusters: the similarity of two clusters is the summed weight of
    the graph's edges between them (in either direction) divided by the product of their
    sizes, i.e. the mean edge weight over all pairs of their members. Merging repeatedly
    joins the most similar pair (``scipy.cluster.hierarchy.linkage``, ``method="average"``,
    on ``max_similarity - similarity``, cut after ``m - n_clusters`` merges).

    Used to over-cluster a start and then let a second view of the data, such as the
    raw-feature kNN graph, decide which parts belong together: a part that one embedding
    glued to the wrong cluster can join the right one.

    Parameters
    ----------
    labels : array-like of int, shape (n_samples,)
        The fine clustering, values in ``[0, m)`` with every value used.
    neighbors : array-like of int, shape (n_samples, k)
        Each row's neighbour indices (``-1`` marks a missing neighbour).
    n_clusters : int
        Groups wanted, ``2 <= n_clusters <= m``.
    weights : array-like of float, shape (n_samples, k), optional
        Edge weights (non-negative); all 1 when omitted.

    Returns
    -------
    merged : ndarray of int64, shape (n_samples,)
        Group of each row, ``merged[i] = group of labels[i]``, groups numbered in order of
        their smallest fine label.
    """
    import scipy.sparse as sp
    from scipy.cluster.hierarchy import cut_tree, linkage

    from graphclust.data.synthetic import relabel_first_appearance

    labels = np.asarray(labels)
    nbrs = np.asarray(neighbors)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise GraphclustError(f"labels must be a 1-D integer array, got {labels.dtype} "
                              f"of shape {labels.shape}")
    n = labels.shape[0]
    if nbrs.ndim != 2 or nbrs.shape[0] != n or not np.issubdtype(nbrs.dtype, np.integer):
        raise GraphclustError(f"neighbors must be integer indices of shape ({n}, k), got "
                              f"{nbrs.dtype} of shape {nbrs.shape}")
    if n == 0 or labels.min() < 0:
        raise GraphclustError("labels must be non-empty and non-negative")
    m = int(labels.max()) + 1
    sizes = np.bincount(labels, minlength=m)
    if np.any(sizes == 0):
        raise GraphclustError(f"labels must use every value in [0, {m}); "
                              f"missing {np.flatnonzero(sizes == 0).tolist()}")
    if isinstance(n_clusters, bool) or not isinstance(n_clusters, (int, np.integer)) \
            or not 2 <= n_clusters <= m:
        raise GraphclustError(f"n_clusters must be an integer in [2, {m}] (the fine "
                              f"clusters), got {n_clusters!r}")
    if nbrs.size and (nbrs.max() >= n or nbrs.min() < -1):
        raise GraphclustError(f"neighbor indices must lie in [0, {n}) or be -1")
    w = np.ones(nbrs.shape) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != nbrs.shape or not np.all(np.isfinite(w)) or np.any(w < 0):
        raise GraphclustError(f"weights must be finite, non-negative, of shape {nbrs.shape}")
    if n_clusters == m:
        return labels.astype(np.int64)
    rows = np.repeat(np.arange(n), nbrs.shape[1])
    keep = nbrs.ravel() >= 0
    src, dst = labels[rows[keep]], labels[nbrs.ravel()[keep]]
    between = sp.coo_matrix((w.ravel()[keep], (src, dst)), shape=(m, m)).toarray()
    between = between + between.T  # an edge counts for both ends, whichever row lists it
    sim = between / np.outer(sizes, sizes)
    iu = np.triu_indices(m, 1)
    dist = sim[iu].max() - sim[iu]  # condensed, in scipy's pair order
    # cut by merge order, so tied heights still leave exactly n_clusters groups
    groups = cut_tree(linkage(dist, method="average"), n_clusters=n_clusters)[:, 0]
    # groups[f] is fine cluster f's group: first appearance = smallest fine label
    return relabel_first_appearance(groups)[labels]


#: names of the starting clusterings (:func:`named_init`)
INIT_NAMES = ("gmm", "umap", "umap-input", "umap-input-consensus")
#: UMAP input metrics of the ``umap-input-consensus`` start
CONSENSUS_METRICS = ("euclidean", "cosine", "correlation")


def named_init(name: str, umap_neighbors: int = 20, n_init: int = 1):
    """The starting clustering called ``name``.

    ``gmm`` (:class:`GMMInit`); ``umap`` or ``umap-input`` (:class:`UMAPGMMInit` of the
    latent means or of the input features, with ``umap_neighbors`` and ``n_init`` GMM
    restarts); ``umap-input-consensus``: the consensus of nine UMAP + GMM runs of the input
    features, with ``n_neighbors`` ``umap_neighbors - 2``, ``- 1`` and ``umap_neighbors``
    (at least 2) and the metrics of :data:`CONSENSUS_METRICS`.
    """
    if name == "gmm":
        return GMMInit()
    if name in ("umap", "umap-input"):
        return UMAPGMMInit(n_neighbors=umap_neighbors, n_init=n_init,
                           space="input" if name == "umap-input" else "latent")
    if name == "umap-input-consensus":
        grid = tuple(sorted({max(2, int(umap_neighbors) - d) for d in (2, 1, 0)}))
        return UMAPGMMInit(n_neighbors=grid, n_init=n_init, space="input",
                           metric=CONSENSUS_METRICS)
    raise GraphclustError(f"unknown init {name!r}; expected one of {', '.join(INIT_NAMES)}")


class LabelsInit:
    """Start from given labels (e.g. a stronger clustering computed elsewhere)."""

    def __init__(self, labels) -> None:
        self.labels = np.asarray(labels, dtype=np.int64)

    def __repr__(self) -> str:
        import hashlib

        return f"LabelsInit(sha={hashlib.sha256(self.labels.tobytes()).hexdigest()[:12]})"

    def __call__(self, latent: np.ndarray, n_clusters: int, random_state: int) -> InitResult:
        if self.labels.shape != (latent.shape[0],):
            raise GraphclustError(
                f"LabelsInit has {self.labels.shape[0]} labels but the data have "
                f"{latent.shape[0]} rows"
            )
        if self.labels.min() < 0 or self.labels.max() >= n_clusters:
            raise GraphclustError(f"LabelsInit labels must lie in [0, {n_clusters})")
        return moments_from_labels(latent, self.labels, n_clusters)


def run_init(init, latent: np.ndarray, n_clusters: int, random_state: int,
             data: np.ndarray | None = None) -> InitResult:
    """Call an initialiser; one that declares ``uses_data`` also gets the input ``data``."""
    if getattr(init, "uses_data", False):
        return init(latent, n_clusters, random_state, data=data)
    return init(latent, n_clusters, random_state)


def check_cluster_labels(labels, n_rows: int, n_clusters: int) -> torch.Tensor:
    """Start labels as an int64 tensor, checked: shape ``(n_rows,)``, values in ``[0, K)``."""
    lab = torch.as_tensor(np.asarray(labels, dtype=np.int64))
    if lab.shape != (n_rows,):
        raise GraphclustError(
            f"got {tuple(lab.shape)} labels for {n_rows} rows; expected shape ({n_rows},)")
    if lab.numel() and (int(lab.min()) < 0 or int(lab.max()) >= n_clusters):
        raise GraphclustError(f"labels must lie in [0, {n_clusters}), got "
                              f"[{int(lab.min())}, {int(lab.max())}]")
    return lab


def _batches(n: int, batch_size: int, generator: torch.Generator | None):
    return torch.randperm(n, generator=generator).split(batch_size)


def adam_epochs(
    params: list, batch_loss, n: int, epochs: int, batch_size: int, lr: float,
    generator: torch.Generator | None, desc: str, verbose: bool,
) -> list[float]:
    """Adam over shuffled mini-batches of ``n`` rows; ``batch_loss(idx)`` gives a batch's
    mean loss. Returns the mean loss per epoch.

    The one mini-batch loop of the pretraining stages (AE, label fitting, k-DVAE pairs):
    shuffle with ``generator`` at the start of each epoch, step Adam, keep weights and
    moments out of the subnormal range (:class:`~graphclust.utils.SubnormalGuard`).
    """
    opt = torch.optim.Adam(params, lr=lr)
    guard = SubnormalGuard(opt)
    losses = []
    for epoch in range(epochs):
        total = 0.0
        bar = tqdm(_batches(n, batch_size, generator), desc=f"{desc} {epoch + 1}/{epochs}",
                   leave=False, disable=not verbose)
        for idx in bar:
            loss = batch_loss(idx)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            guard.step()
            total += loss.item() * len(idx)
        losses.append(total / max(n, 1))
        if verbose:
            tqdm.write(f"{desc} epoch {epoch + 1}/{epochs}: loss {losses[-1]:.4f}")
    return losses


def pretrain_autoencoder(
    model: GMVAE,
    X: torch.Tensor,
    epochs: int,
    batch_size: int = 256,
    lr: float = 1e-3,
    noise: float = 0.2,
    generator: torch.Generator | None = None,
    verbose: bool = False,
) -> list[float]:
    """Train ``decoder(encoder.mu(corrupt(x)))`` to reconstruct ``x`` (a denoising AE).

    Parameters
    ----------
    model : GMVAE
        Its encoder trunk + mean head and its decoder are trained.
    X : Tensor of shape (n_samples, n_features)
        On the model's device.
    epochs, batch_size, lr :
        Adam optimisation.
    noise : float
        Masking noise: each input value is zeroed with this probability (0: plain AE).
    generator : torch.Generator, optional
        CPU generator for the shuffle and the noise.

    Returns
    -------
    list of float
        Mean negative log-likelihood per epoch.
    """
    if not 0.0 <= noise < 1.0:
        raise GraphclustError(f"noise must lie in [0, 1), got {noise}")
    params = (
        list(model.encoder.trunk.parameters())
        + list(model.encoder.mu.parameters())
        + list(model.decoder.parameters())
    )

    def batch_loss(idx: torch.Tensor) -> torch.Tensor:
        x = X[idx.to(X.device)]
        x_in = x
        if noise > 0:
            keep = torch.rand(x.shape, generator=generator) >= noise
            x_in = x * keep.to(x.device)
        return -model.likelihood.log_prob(x, model.autoencode(x_in)).mean()

    model.train()
    return adam_epochs(params, batch_loss, X.shape[0], epochs, batch_size, lr, generator,
                        "pretrain AE", verbose)


def fit_to_labels(
    model: GMVAE,
    X: torch.Tensor,
    labels: np.ndarray,
    epochs: int,
    batch_size: int = 256,
    lr: float = 1e-3,
    generator: torch.Generator | None = None,
    verbose: bool = False,
    label_weight: float = 0.0,
) -> list[float]:
    """Maximise the mixture ELBO with ``q(c | x)`` held at the one-hot ``labels``.

    The coordinate-ascent step of the ELBO for a fixed cluster posterior: encoder, decoder
    and prior (means, variances, mixing vector) are trained on
    ``ln p(x | z) + A(mu, sigma, onehot) + ln pi_label`` (see
    :meth:`~graphclust.models.mixture.GaussianMixturePrior.latent_term`), which pulls each
    latent mean towards its cluster's Gaussian. After it, a diagonal GMM in the latent space
    agrees with a start that was found elsewhere (UMAP, the input space), so the mixture
    objective starts where its own prior agrees with the start instead of drifting
    towards the plain latent GMM's clustering in the first epoch.

    Parameters
    ----------
    model : GMVAE
        With its prior initialised (:func:`apply_init`).
    X : Tensor of shape (n_samples, n_features)
    labels : ndarray of shape (n_samples,)
    epochs, batch_size, lr :
        Adam optimisation.
    generator : torch.Generator, optional
        CPU generator of the shuffle and the reparameterisation noise.
    label_weight : float
        Weight ``alpha`` of an added term ``alpha ln q(c = label | x)``: the model's own
        cluster posterior (the classifier head on the latent mean, or the GMM posterior)
        is trained to predict the labels, with the encoder (a classification term as in
        semi-supervised VAEs). The ELBO term alone leaves the latent means only roughly
        grouped by the labels: on MNIST after 15 epochs a linear head agreed with 97.1% of
        the start's labels, 99.7% with ``alpha = 10`` (see BENCHMARKS.md). 0 (default)
        leaves the head alone.

    Returns
    -------
    list of float
        Mean negative objective per epoch.
    """
    if epochs < 0:
        raise GraphclustError(f"label fitting epochs must be >= 0, got {epochs}")
    if not (math.isfinite(label_weight) and label_weight >= 0):
        raise GraphclustError(f"label_weight must be a finite number >= 0, got {label_weight}")
    K = model.n_clusters
    lab = check_cluster_labels(labels, X.shape[0], K)
    params = [p for name, p in model.named_parameters()
              if label_weight > 0 or not name.startswith("posterior.")]

    def batch_loss(idx: torch.Tensor) -> torch.Tensor:
        x = X[idx.to(X.device)]
        onehot = torch.nn.functional.one_hot(lab[idx], K).to(x.device, x.dtype)
        mu, logvar = model.encoder(x)
        eps = torch.randn(mu.shape, generator=generator).to(mu.device, mu.dtype)
        recon = model.decoder(mu + (0.5 * logvar).exp() * eps)
        # 0 ln 0 = 0: the entropy of a one-hot posterior vanishes
        latent = model.prior.latent_term(mu, logvar, onehot, torch.zeros_like(onehot))
        obj = (model.likelihood.log_prob(x, recon) + latent
               + (onehot * model.prior.log_weights()).sum(-1))
        if label_weight > 0:
            log_q = model.posterior.log_gamma(mu, mu, model.prior)
            obj = obj + label_weight * (onehot * log_q).sum(-1)
        return -obj.mean()

    model.train()
    return adam_epochs(params, batch_loss, X.shape[0], epochs, batch_size, lr, generator,
                        "fit to labels", verbose)


@torch.no_grad()
def latent_means(model: GMVAE, X: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    """Latent means of every row, shape (n_samples, latent_dim)."""
    model.eval()
    return torch.cat([model.embed(X[s : s + batch_size]) for s in range(0, X.shape[0], batch_size)])


def apply_init(model: GMVAE, init: InitResult, logvar_ratio: float = 0.1) -> None:
    """Set the prior from ``init`` and restart the (untrained) encoder variance head.

    ``log sigma~^2`` becomes the constant ``ln(logvar_ratio * mean prior variance)``, so the
    first samples stay close to the pretrained means.
    """
    model.prior.set_parameters(init.means, init.variances, init.weights)
    model.encoder.reset_logvar(math.log(logvar_ratio * float(np.mean(init.variances))))


def pretrain_head(
    head: ClassifierHead,
    latent: torch.Tensor,
    labels: np.ndarray,
    C: float = 1.0,
    max_iter: int = 500,
) -> float:
    """Fit the classifier head to predict ``labels`` from fixed latent means.

    The head is linear + softmax, i.e. multinomial logistic regression, so it is fitted
    exactly (L-BFGS, ``sklearn.linear_model.LogisticRegression`` on standardised latents,
    deterministic) instead of by thousands of tiny SGD steps, and its weights are copied
    into ``head``.

    Parameters
    ----------
    head : ClassifierHead
    latent : Tensor of shape (n_samples, latent_dim)
    labels : ndarray of shape (n_samples,)
        Initial clusters in ``[0, n_clusters)``.
    C : float
        Inverse L2 strength (scikit-learn's convention: penalty ``||W||^2 / 2C`` against the
        summed log-loss).
    max_iter : int

    Returns
    -------
    float
        Training accuracy of the fitted head on ``labels``.
    """
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    Z = latent.detach().cpu().numpy().astype(np.float64)
    # standardise for a well-conditioned fit; the scaling is folded into W and b below
    loc, scale = Z.mean(0), Z.std(0) + 1e-8
    Z = (Z - loc) / scale
    y = np.asarray(labels, dtype=np.int64)
    K = head.linear.out_features
    classes = np.unique(y)
    W = np.zeros((K, Z.shape[1]))
    b = np.full(K, -30.0)  # clusters without members stay (almost) empty
    if classes.size == 1:
        b[classes[0]] = 0.0
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            lr = LogisticRegression(C=C, max_iter=max_iter).fit(Z, y)
        if classes.size == 2:  # scikit-learn stores one row: logits (0, w.z + b) for (c0, c1)
            W[classes[1]], b[classes[1]] = lr.coef_[0], lr.intercept_[0]
            b[classes[0]] = 0.0
        else:
            W[classes], b[classes] = lr.coef_, lr.intercept_
    W, b = W / scale, b - (W / scale) @ loc
    with torch.no_grad():
        head.linear.weight.copy_(torch.as_tensor(W, dtype=torch.float32))
        head.linear.bias.copy_(torch.as_tensor(b, dtype=torch.float32))
        pred = head.log_gamma(latent, latent, None).argmax(1).cpu().numpy()
    return float(np.mean(pred == y))

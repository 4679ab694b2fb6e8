"""Scikit-learn style front doors: :class:`DGG` and its graph-free baseline :class:`VaDE`.

Both follow the ``KMeans`` conventions: ``__init__`` only stores its keyword arguments,
``fit(X, y=None)`` validates them and does the work (``y`` is used only to log
ACC/NMI/ARI per epoch), learned state ends in ``_``::

    model = DGG(n_clusters=10, random_state=0).fit(X)
    model.labels_, model.predict_proba(X), model.transform(X), model.affinity_matrix_

Common inspection interface (both estimators):

- ``labels_`` (n,), ``predict_proba(X)`` / ``proba_`` (n, K) soft assignments,
  ``embedding_`` (n, latent_dim) latent means, ``graph_``, ``pi_`` (DGG), ``history_``;
- ``affinity_matrix_``: scipy CSR (n, n) on the graph's edges, ``A[i, j] = sum_k gamma_ik gamma_jk``
  for each edge ``i -> neighbour j``;
- :meth:`inspection_data` bundles them in one :class:`ClusterInspection`.

VaDE trains without a graph. Its ``affinity_matrix_`` exists only when a ``graph`` for the
training data is passed (it is used for inspection, never for training); otherwise reading
it raises an ``AttributeError`` that says so. :meth:`affinity_on` computes the affinity on
any graph of the training data, for both models.

The seeds' other models have the same API and the same shared pretraining (denoising AE,
latent clustering): :class:`AEGMM` (autoencoder + Gaussian mixture), :class:`GMVAE` (the
slides' q(z|y,x) GMVAE with VIMCO and std annealing), :class:`KDVAE` and :class:`KDAE` (k
encoder/decoder pairs, hard-max clustering) and :class:`VCAMI` (augmented mutual
information). GMVAE, KDVAE, KDAE and VCAMI take DGG's neighbour term as a plug-in::

    reg = GraphRegularizer(KNNGraph.load("graph.npz"), weight=0.5)
    KDVAE(n_clusters=10, graph_regularizer=reg).fit(X)
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.base import BaseEstimator, ClusterMixin, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from graphclust.data.augment import default_augmenter
from graphclust.distributed import DistContext
from graphclust.graph.graph import KNNGraph
from graphclust.models.kdvae import KAutoencoderRecipe
from graphclust.models.loop import FitConfig
from graphclust.models.mixture import GMVAE as GMVAEModule
from graphclust.models.nvisa import NVISARecipe, StdAnnealing
from graphclust.models.pipeline import (
    FitResult,
    KNNGraphBuilder,
    PretrainConfig,
    fit_gmvae,
)
from graphclust.models.pretrain import INIT_NAMES, named_init
from graphclust.models.regularizer import GraphRegularizer
from graphclust.models.staged import ModelFit, fit_cluster_model
from graphclust.models.training import TrainConfig, predict_gamma
from graphclust.models.vcami import VCAMIRecipe, VCAMIWeights
from graphclust.nn.likelihood import (
    LearnedStdGaussianLikelihood,
    Likelihood,
    get_likelihood,
    infer_likelihood,
)
from graphclust.nn.mlp import check_hidden
from graphclust.utils import (
    GraphclustError,
    check_features,
    check_labels,
    check_random_state,
    resolve_device,
    seed_from,
)

__all__ = [
    "AEGMM",
    "DGG",
    "GMVAE",
    "KDAE",
    "KDVAE",
    "VCAMI",
    "ClusterInspection",
    "GraphRegularizer",
    "VaDE",
    "affinity_on_edges",
]


@dataclass
class ClusterInspection:
    """What the inspection tools read from a fitted clustering model.

    Attributes
    ----------
    labels : ndarray of shape (n_samples,)
    proba : ndarray of shape (n_samples, n_clusters)
        Soft assignments ``q(c | x)``.
    embedding : ndarray of shape (n_samples, latent_dim)
    affinity : scipy.sparse.csr_matrix of shape (n_samples, n_samples) or None
        ``sum_k proba_ik proba_jk`` on the graph's edges.
    graph : KNNGraph or None
    pi : ndarray of shape (n_samples, n_clusters) or None
        DGG's node mixing weights.
    history : list of dict
    """

    labels: np.ndarray
    proba: np.ndarray
    embedding: np.ndarray
    affinity: sp.csr_matrix | None
    graph: KNNGraph | None
    pi: np.ndarray | None
    history: list


def affinity_on_edges(proba: np.ndarray, graph: KNNGraph) -> sp.csr_matrix:
    """``A[i, j] = sum_k proba_ik proba_jk`` for every edge ``i -> j`` of ``graph``.

    Parameters
    ----------
    proba : ndarray of shape (n_nodes, n_clusters)
    graph : KNNGraph

    Returns
    -------
    scipy.sparse.csr_matrix of shape (n_nodes, n_nodes), float32
    """
    proba = np.asarray(proba, dtype=np.float32)
    if proba.shape[0] != graph.n_nodes:
        raise GraphclustError(
            f"the graph has {graph.n_nodes} nodes but there are {proba.shape[0]} assignments; "
            "use a graph of the training data"
        )
    n, k = graph.indices.shape
    vals = np.einsum("nc,nkc->nk", proba, proba[graph.indices])
    rows = np.repeat(np.arange(n), k)
    A = sp.csr_matrix((vals.ravel(), (rows, graph.indices.ravel())), shape=(n, n), dtype=np.float32)
    A.sort_indices()
    return A


def _resolve_init(init: Any) -> Callable:
    if callable(init):
        return init
    if init in INIT_NAMES:
        return named_init(init)
    raise GraphclustError(
        f"unknown init {init!r}; expected one of {', '.join(INIT_NAMES)} or a callable "
        "(latent, n_clusters, random_state) -> InitResult"
    )


def _opt_float(value: Any) -> float | None:
    """``None`` stays ``None``; anything else becomes a float."""
    return None if value is None else float(value)


def _check_int(value: Any, name: str, low: int, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise GraphclustError(
            f"{name} must be an integer >= {low}{' or None' if allow_none else ''}, got {value!r}"
        )
    return int(value)


class _MixtureClusterer(ClusterMixin, TransformerMixin, BaseEstimator):
    """Shared fit/predict machinery of the GMVAE-based clusterers (not public)."""

    _uses_graph_for_training = True

    # ------------------------------------------------------------------ validation
    def _train_config(self) -> TrainConfig:
        raise NotImplementedError

    def _graph_spec(self, X: np.ndarray):
        raise NotImplementedError

    def _validate(self, X: Any, y: Any) -> tuple[np.ndarray, np.ndarray | None]:
        X, yv = self._validate_common(X, y)
        if self.posterior not in ("head", "gmm"):
            raise GraphclustError(f"posterior must be 'head' or 'gmm', got {self.posterior!r}")
        return X, yv

    def _validate_common(self, X: Any, y: Any) -> tuple[np.ndarray, np.ndarray | None]:
        X = check_features(X)
        n = X.shape[0]
        yv = None if y is None else check_labels(y, n)
        k = self.n_clusters
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
            raise GraphclustError(f"n_clusters must be an integer, got {k!r}")
        if not 2 <= k <= n:
            raise GraphclustError(
                f"n_clusters={k} is invalid for {n} samples; expected 2 <= n_clusters <= n_samples"
            )
        _check_int(self.latent_dim, "latent_dim", 1)
        check_hidden(self.hidden)
        _check_int(self.n_epochs, "n_epochs", 0)
        _check_int(self.batch_size, "batch_size", 1)
        _check_int(self.pretrain_epochs, "pretrain_epochs", 0)
        if self.resume and self.checkpoint_dir is None:
            raise GraphclustError("resume=True needs checkpoint_dir (the folder to resume from)")
        if self.checkpoint_dir is not None and not isinstance(self.random_state, (int, np.integer)):
            raise GraphclustError(
                "checkpoint_dir needs an integer random_state (the seed is part of every stage "
                f"artifact, so a resumed run must use the same one), got {self.random_state!r}"
            )
        return X, yv

    def _check_graph(self, graph: Any, X: np.ndarray) -> KNNGraph | None:
        if graph is None:
            return None
        if not isinstance(graph, KNNGraph):
            raise GraphclustError(
                f"graph must be a KNNGraph (or None), got {type(graph).__name__}; load one with "
                "KNNGraph.load('graph.npz')"
            )
        graph.check_matches(X)
        return graph

    # ------------------------------------------------------------------ fit
    def fit(self, X, y=None) -> _MixtureClusterer:
        """Pretrain, initialise and train on ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,), optional
            Ground truth, used only to log ACC/NMI/ARI in ``history_``.

        Returns
        -------
        self
        """
        X, yv = self._validate(X, y)
        likelihood = get_likelihood(self.likelihood, X)
        dist = getattr(self, "distributed", None)  # DGG and VaDE only
        if dist is not None and not isinstance(dist, DistContext):
            raise GraphclustError(
                f"distributed must be a DistContext from graphclust.distributed.init_distributed "
                f"(or None), got {type(dist).__name__}"
            )
        device = resolve_device(self.device) if dist is None else dist.device
        rng = check_random_state(self.random_state)
        seed = seed_from(rng) if not isinstance(self.random_state, (int, np.integer)) else int(
            self.random_state)
        train_cfg = self._train_config()
        train_cfg.validate()
        pretrain_cfg = PretrainConfig(
            epochs=self.pretrain_epochs, batch_size=self.pretrain_batch_size,
            lr=self.pretrain_lr, noise=self.ae_noise,
            label_epochs=getattr(self, "label_epochs", 0),
            label_weight=float(getattr(self, "label_weight", 0.0)),
        )
        pretrain_cfg.validate()
        graph_spec = self._graph_spec(X)
        run_dir = None
        if self.checkpoint_dir is not None:
            run_dir = Path(self.checkpoint_dir)
            if dist is None or dist.is_main:
                run_dir.mkdir(parents=True, exist_ok=True)
        res: FitResult = fit_gmvae(
            X,
            n_clusters=int(self.n_clusters), likelihood=likelihood,
            latent_dim=int(self.latent_dim), hidden=check_hidden(self.hidden),
            posterior=self.posterior, init=_resolve_init(self.init), graph=graph_spec,
            pretrain=pretrain_cfg, train=train_cfg, seed=seed, device=device, y=yv,
            run_dir=run_dir, resume=bool(self.resume), callbacks=tuple(self.callbacks or ()),
            verbose=bool(self.verbose), dist=dist,
        )
        self.model_: GMVAEModule = res.model
        self.likelihood_ = likelihood
        self.n_features_in_ = X.shape[1]
        self.seed_ = res.seed
        self.proba_ = res.gamma
        self.labels_ = res.gamma.argmax(1).astype(np.int64)
        self.embedding_ = res.embedding
        self.init_ = res.init
        self.pi_ = res.pi
        self.history_ = res.history
        self.stage_times_ = res.stage_times
        self.graph_ = res.graph if self._uses_graph_for_training else self._check_graph(
            self.graph, X)
        self._affinity = None if self.graph_ is None else affinity_on_edges(self.proba_, self.graph_)
        return self

    # ------------------------------------------------------------------ predict
    def _check_X(self, X) -> torch.Tensor:
        check_is_fitted(self, "model_")
        X = check_features(X, min_samples=1)
        if X.shape[1] != self.n_features_in_:
            raise GraphclustError(
                f"X has {X.shape[1]} features, but the model was fitted with "
                f"{self.n_features_in_}; pass data with the training columns"
            )
        self.likelihood_.check_data(X)
        dev = next(self.model_.parameters()).device
        return torch.from_numpy(X).to(dev)

    def predict_proba(self, X) -> np.ndarray:
        """Soft assignments ``q(c | x)`` from the latent mean, shape (n_samples, n_clusters)."""
        Xt = self._check_X(X)
        return predict_gamma(self.model_, Xt).cpu().numpy()

    def predict(self, X) -> np.ndarray:
        """Cluster of each row (argmax of :meth:`predict_proba`), shape (n_samples,)."""
        return self.predict_proba(X).argmax(1).astype(np.int64)

    def transform(self, X) -> np.ndarray:
        """Latent means, shape (n_samples, latent_dim)."""
        Xt = self._check_X(X)
        self.model_.eval()
        with torch.no_grad():
            return torch.cat([self.model_.embed(Xt[s : s + 4096])
                              for s in range(0, Xt.shape[0], 4096)]).cpu().numpy()

    # ------------------------------------------------------------------ inspection
    @property
    def affinity_matrix_(self) -> sp.csr_matrix:
        """``A[i, j] = sum_k gamma_ik gamma_jk`` on the graph's edges, scipy CSR (n, n)."""
        check_is_fitted(self, "model_")
        if self._affinity is None:
            raise AttributeError(
                f"{type(self).__name__} was trained without a graph, so affinity_matrix_ is not "
                "defined; pass graph=KNNGraph(...) of the training data to the constructor (used "
                "for inspection only), or call affinity_on(graph)"
            )
        return self._affinity

    def affinity_on(self, graph: KNNGraph) -> sp.csr_matrix:
        """The affinity ``sum_k gamma_ik gamma_jk`` on the edges of any graph of the training data."""
        check_is_fitted(self, "model_")
        return affinity_on_edges(self.proba_, graph)

    def inspection_data(self) -> ClusterInspection:
        """Labels, soft assignments, embedding, affinity on edges, graph, ``pi``, history."""
        check_is_fitted(self, "model_")
        return ClusterInspection(
            labels=self.labels_, proba=self.proba_, embedding=self.embedding_,
            affinity=self._affinity, graph=self.graph_, pi=self.pi_, history=self.history_,
        )


_COMMON_DOC = """
    n_clusters : int
        Number of clusters ``K`` (2 <= K <= n_samples).
    latent_dim : int
        Latent dimension ``M`` (10 in the papers).
    hidden : sequence of int
        Encoder widths (decoder mirrored); default D-500-500-2000-10.
    likelihood : {"auto", "bernoulli", "gaussian", "multinomial"} or Likelihood
        ``auto``: Bernoulli when every value lies in [0, 1], else Gaussian (unit variance).
        ``multinomial``: a distribution over the features per row, for word counts or tf-idf
        rows (:class:`~graphclust.nn.likelihood.MultinomialLikelihood`; pass an instance to
        set its ``scale``).
    posterior : {"head", "gmm"}
        ``q(c | x)``: a linear+softmax head on the latent mean (DGG reference, default) or
        the GMM posterior ``pi_k N(z; mu_k, sigma_k^2)`` (original VaDE).
    init : {"gmm", "umap", "umap-input", "umap-input-consensus"} or callable
        Latent clustering that starts the model: a diagonal GMM on the AE latent means, or
        UMAP(10-d) + full GMM labels (the N2D recipe; needs umap-learn) of the latent means
        (``umap``) or of the input features (``umap-input``), or the consensus of nine such
        runs of the input features (``umap-input-consensus``, three UMAP neighbourhoods
        times three metrics; :func:`~graphclust.models.pretrain.named_init`), or a callable
        ``(latent, n_clusters, random_state) -> InitResult`` (see graphclust.models.pretrain),
        e.g. ``UMAPGMMInit(n_neighbors=5, n_init=10, space="input")``, the COIL-20 start.
    n_epochs : int
        Training epochs after pretraining.
    batch_size : int
        Anchors per batch.
    lr, weight_decay, lr_step, lr_gamma :
        Adam with ``StepLR(lr_step, lr_gamma)``. The paper used lr 2e-3; the default here is
        5e-4, which keeps a pretrained start: on 10,000 MNIST rows 2e-3 lost 10-20 ACC points
        in the first epoch and recovered slowly.
    grad_clip : float or None
        Clip each training step's gradient norm at this multiple of the previous epoch's
        median norm (:class:`graphclust.models.training.TrainConfig`); ``None`` never clips.
        On 20 Newsgroups with a 20-d latent an unclipped run diverged in epoch 22 (norms
        from ~22 to 4,895) and collapsed to chance-level clusters; at the default 10x, the
        first 21 epochs were untouched, 3 steps of epoch 22 were cut, and it trained on.
    pretrain_epochs, pretrain_batch_size, pretrain_lr, ae_noise :
        Denoising autoencoder pretraining (masking noise rate ``ae_noise``).
    label_epochs : int
        Epochs of fitting encoder, decoder and prior to the start's labels (the ELBO with
        ``q(c | x)`` held at them) before the head is fitted; 0 skips it. Helps when the
        start comes from UMAP or the input space, which a head on the raw AE latent cannot
        reproduce (:func:`graphclust.models.pretrain.fit_to_labels`).
    label_weight : float
        Weight of ``ln q(c = label | x)`` during label fitting: the cluster posterior (head
        or GMM posterior) is trained with the encoder to predict the start's labels, so
        training starts from a posterior that reproduces the start; 0 (default) leaves it
        out. Needs ``label_epochs > 0``. On MNIST, 10 lifted the head's agreement with the
        start from 97.1% to 99.7% (BENCHMARKS.md).
    checkpoint_dir : path, optional
        Folder for stage artifacts and per-epoch checkpoints (created if missing).
    resume : bool
        Reuse finished stages and continue training from the last checkpoint in
        ``checkpoint_dir``; the result equals an uninterrupted run.
    callbacks : sequence of callables, optional
        ``callback(record, history)`` after every training epoch (record: loss, lr, and
        acc/nmi/ari when ``y`` is given); raising stops training after a complete checkpoint.
    device : {"auto", "cpu", "cuda", ...}
    random_state : int, numpy Generator or None
        One seed fixes the whole run (no global RNG is touched).
    verbose : bool
        Progress bars and one line per epoch.
    distributed : DistContext, optional
        Train data-parallel in every process of a torchrun job (from
        :func:`graphclust.distributed.init_distributed`; its device replaces ``device``):
        rank 0 pretrains and writes ``checkpoint_dir``, each rank trains on ``batch_size /
        world_size`` anchors of every batch, and the result matches a one-process run up to
        floating-point summation order. Every rank calls ``fit`` with the same data.
"""


class DGG(_MixtureClusterer):
    """Deep clustering by Gaussian-mixture VAEs with graph embedding (Yang et al., ICCV 2019).

    A GMVAE whose objective lets each node be explained by its kNN-graph neighbours'
    posteriors, with node-specific mixing weights ``pi_i`` propagated over the graph
    (design note ``DGG.md``), trained as PyG message passing.

    Parameters
    ----------
    graph : KNNGraph, callable or None
        The kNN graph of ``X`` (e.g. built on Siamese embeddings by ``graphclust
        build-graph``; checked against ``X``). ``None`` builds one with ``n_neighbors``
        neighbours and the self-tuning Gaussian kernel on the pretrained AE's latent means.
        A callable ``(X, latent, device) -> KNNGraph`` is run after AE pretraining.
    n_neighbors : int
        Neighbours of the graph built when ``graph`` is None.
    neighbor_sample : int or None
        Neighbours drawn per anchor and batch with probability ``w_ij`` (importance
        weighted, unbiased); ``None`` uses every neighbour of every anchor (``1 + J`` times
        more nodes per batch). Default 1: on 10,000 MNIST rows a sampled epoch took 1.8 s
        against 11.8 s with all 20 neighbours, at the same accuracy per epoch.
    self_weight : float
        Weight of a node's own ELBO (1/2 in DGG); neighbours share the rest.
    pi_update : {"epoch", "batch"}
        Recompute ``pi`` over the whole graph once per epoch (one sparse matmul on the
        latent-mean ``gamma``), or per batch from the batch's ``gamma``.
    """

    def __init__(
        self,
        n_clusters: int = 10,
        graph: KNNGraph | Callable | None = None,
        n_neighbors: int = 20,
        neighbor_sample: int | None = 1,
        self_weight: float = 0.5,
        pi_update: str = "epoch",
        latent_dim: int = 10,
        hidden: Sequence[int] = (500, 500, 2000),
        likelihood: Any = "auto",
        posterior: str = "head",
        init: Any = "gmm",
        n_epochs: int = 30,
        batch_size: int = 256,
        lr: float = 5e-4,
        weight_decay: float = 1e-4,
        lr_step: int = 10,
        lr_gamma: float = 0.9,
        grad_clip: float | None = 10.0,
        pretrain_epochs: int = 20,
        pretrain_batch_size: int = 256,
        pretrain_lr: float = 1e-3,
        ae_noise: float = 0.2,
        label_epochs: int = 0,
        label_weight: float = 0.0,
        checkpoint_dir: str | Path | None = None,
        resume: bool = False,
        callbacks: Sequence[Callable] | None = None,
        device: str = "auto",
        random_state: int | np.random.Generator | None = None,
        verbose: bool = True,
        distributed: DistContext | None = None,
    ) -> None:
        self.n_clusters = n_clusters
        self.graph = graph
        self.n_neighbors = n_neighbors
        self.neighbor_sample = neighbor_sample
        self.self_weight = self_weight
        self.pi_update = pi_update
        self.latent_dim = latent_dim
        self.hidden = hidden
        self.likelihood = likelihood
        self.posterior = posterior
        self.init = init
        self.n_epochs = n_epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.lr_step = lr_step
        self.lr_gamma = lr_gamma
        self.grad_clip = grad_clip
        self.pretrain_epochs = pretrain_epochs
        self.pretrain_batch_size = pretrain_batch_size
        self.pretrain_lr = pretrain_lr
        self.ae_noise = ae_noise
        self.label_epochs = label_epochs
        self.label_weight = label_weight
        self.checkpoint_dir = checkpoint_dir
        self.resume = resume
        self.callbacks = callbacks
        self.device = device
        self.random_state = random_state
        self.verbose = verbose
        self.distributed = distributed

    def _train_config(self) -> TrainConfig:
        _check_int(self.neighbor_sample, "neighbor_sample", 1, allow_none=True)
        return TrainConfig(
            n_epochs=int(self.n_epochs), batch_size=int(self.batch_size), lr=float(self.lr),
            weight_decay=float(self.weight_decay), lr_step=int(self.lr_step),
            lr_gamma=float(self.lr_gamma), neighbor_sample=self.neighbor_sample,
            self_weight=float(self.self_weight), pi_update=self.pi_update,
            grad_clip=_opt_float(self.grad_clip),
        )

    def _graph_spec(self, X: np.ndarray):
        if self.graph is None:
            k = _check_int(self.n_neighbors, "n_neighbors", 1)
            if k >= X.shape[0]:
                raise GraphclustError(
                    f"n_neighbors={k} needs more than {k} samples, got {X.shape[0]}; "
                    "use fewer neighbours"
                )
            return KNNGraphBuilder(k=k, space="latent")
        if isinstance(self.graph, KNNGraph):
            return self._check_graph(self.graph, X)
        if callable(self.graph):
            return self.graph
        return self._check_graph(self.graph, X)  # raises with the expected type


class VaDE(_MixtureClusterer):
    """Variational deep embedding (Jiang et al., 2017): DGG without neighbours.

    The same pipeline and networks as :class:`DGG` trained on the plain GMVAE ELBO with
    a global mixing vector: the graph-free baseline.

    Parameters
    ----------
    graph : KNNGraph or None
        Not used for training; when given (a graph of ``X``), ``affinity_matrix_`` is
        computed on its edges so that VaDE and DGG can be inspected on the same graph.
        Without it, ``affinity_matrix_`` raises ``AttributeError``.
    """

    _uses_graph_for_training = False

    def __init__(
        self,
        n_clusters: int = 10,
        graph: KNNGraph | None = None,
        latent_dim: int = 10,
        hidden: Sequence[int] = (500, 500, 2000),
        likelihood: Any = "auto",
        posterior: str = "head",
        init: Any = "gmm",
        n_epochs: int = 30,
        batch_size: int = 256,
        lr: float = 5e-4,
        weight_decay: float = 1e-4,
        lr_step: int = 10,
        lr_gamma: float = 0.9,
        grad_clip: float | None = 10.0,
        pretrain_epochs: int = 20,
        pretrain_batch_size: int = 256,
        pretrain_lr: float = 1e-3,
        ae_noise: float = 0.2,
        label_epochs: int = 0,
        label_weight: float = 0.0,
        checkpoint_dir: str | Path | None = None,
        resume: bool = False,
        callbacks: Sequence[Callable] | None = None,
        device: str = "auto",
        random_state: int | np.random.Generator | None = None,
        verbose: bool = True,
        distributed: DistContext | None = None,
    ) -> None:
        self.n_clusters = n_clusters
        self.graph = graph
        self.latent_dim = latent_dim
        self.hidden = hidden
        self.likelihood = likelihood
        self.posterior = posterior
        self.init = init
        self.n_epochs = n_epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.lr_step = lr_step
        self.lr_gamma = lr_gamma
        self.grad_clip = grad_clip
        self.pretrain_epochs = pretrain_epochs
        self.pretrain_batch_size = pretrain_batch_size
        self.pretrain_lr = pretrain_lr
        self.ae_noise = ae_noise
        self.label_epochs = label_epochs
        self.label_weight = label_weight
        self.checkpoint_dir = checkpoint_dir
        self.resume = resume
        self.callbacks = callbacks
        self.device = device
        self.random_state = random_state
        self.verbose = verbose
        self.distributed = distributed

    def _train_config(self) -> TrainConfig:
        return TrainConfig(
            n_epochs=int(self.n_epochs), batch_size=int(self.batch_size), lr=float(self.lr),
            weight_decay=float(self.weight_decay), lr_step=int(self.lr_step),
            lr_gamma=float(self.lr_gamma), neighbor_sample=None,
            grad_clip=_opt_float(self.grad_clip),
        )

    def _graph_spec(self, X: np.ndarray):
        self._check_graph(self.graph, X)  # validated now (inspection only), not trained on


DGG.__doc__ += _COMMON_DOC
VaDE.__doc__ += _COMMON_DOC


# =========================================================================== more models
# The seeds' other models on the shared pieces (AE pretraining, latent initialisers, GMM
# prior, likelihoods) and the graph regulariser as a plug-in (issue 7).


class AEGMM(_MixtureClusterer):
    """The AE+GMM baseline: a denoising autoencoder, then a Gaussian mixture on its latent means.

    The shared DGG/VaDE pipeline with no training stage: the autoencoder is pretrained,
    ``init`` clusters its latent means (a diagonal ``GaussianMixture`` by default), and
    the mixture becomes the model's prior, so ``predict_proba`` is the mixture's posterior
    ``pi_k N(mu(x); mu_k, sigma_k^2)`` of a row's latent mean (equal to the fitted
    mixture's own ``predict_proba`` for ``init="gmm"``).

    Parameters
    ----------
    n_clusters : int
    graph : KNNGraph or None
        Not used for fitting; when given, ``affinity_matrix_`` is computed on its edges.
    latent_dim, hidden, likelihood, init :
        As for :class:`DGG`.
    pretrain_epochs, pretrain_batch_size, pretrain_lr, ae_noise :
        Denoising autoencoder.
    checkpoint_dir, resume, device, random_state, verbose :
        As for :class:`DGG`.
    """

    _uses_graph_for_training = False
    # fixed by the method (read by the shared pipeline; not parameters)
    posterior = "gmm"
    n_epochs = 0
    batch_size = 256
    callbacks = None

    def __init__(
        self,
        n_clusters: int = 10,
        graph: KNNGraph | None = None,
        latent_dim: int = 10,
        hidden: Sequence[int] = (500, 500, 2000),
        likelihood: Any = "auto",
        init: Any = "gmm",
        pretrain_epochs: int = 20,
        pretrain_batch_size: int = 256,
        pretrain_lr: float = 1e-3,
        ae_noise: float = 0.2,
        checkpoint_dir: str | Path | None = None,
        resume: bool = False,
        device: str = "auto",
        random_state: int | np.random.Generator | None = None,
        verbose: bool = True,
    ) -> None:
        self.n_clusters = n_clusters
        self.graph = graph
        self.latent_dim = latent_dim
        self.hidden = hidden
        self.likelihood = likelihood
        self.init = init
        self.pretrain_epochs = pretrain_epochs
        self.pretrain_batch_size = pretrain_batch_size
        self.pretrain_lr = pretrain_lr
        self.ae_noise = ae_noise
        self.checkpoint_dir = checkpoint_dir
        self.resume = resume
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    def _train_config(self) -> TrainConfig:
        return TrainConfig(n_epochs=0)

    def _graph_spec(self, X: np.ndarray):
        self._check_graph(self.graph, X)  # inspection only


class _ModelClusterer(_MixtureClusterer):
    """Shared fit of the recipe-based models (GMVAE, KDVAE, KDAE, VCAMI); not public.

    Subclasses provide ``_recipe(X)`` and may override ``_make_likelihood(X)``.
    """

    def _recipe(self, X: np.ndarray) -> Any:
        raise NotImplementedError

    def _make_likelihood(self, X: np.ndarray):
        spec = self.likelihood
        return copy.copy(spec) if isinstance(spec, Likelihood) else get_likelihood(spec, X)

    def _validate(self, X: Any, y: Any) -> tuple[np.ndarray, np.ndarray | None]:
        return self._validate_common(X, y)

    def _check_regularizer(self, X: np.ndarray) -> GraphRegularizer | None:
        reg = self.graph_regularizer
        if reg is None:
            return None
        if not isinstance(reg, GraphRegularizer):
            raise GraphclustError(
                f"graph_regularizer must be a GraphRegularizer (or None), got "
                f"{type(reg).__name__}; e.g. GraphRegularizer(KNNGraph.load('graph.npz'))"
            )
        reg.validate(X)
        return reg

    def _fit_config(self) -> FitConfig:
        return FitConfig(
            n_epochs=int(self.n_epochs), batch_size=int(self.batch_size), lr=float(self.lr),
            weight_decay=float(self.weight_decay), lr_step=int(self.lr_step),
            lr_gamma=float(self.lr_gamma),
            max_grad_norm=_opt_float(self.max_grad_norm),
        )

    def fit(self, X, y=None) -> _ModelClusterer:
        """Pretrain, initialise and train on ``X`` (graph-regularised with ``graph_regularizer``).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,), optional
            Ground truth, used only to log ACC/NMI/ARI in ``history_``.

        Returns
        -------
        self
        """
        X, yv = self._validate(X, y)
        reg = self._check_regularizer(X)
        inspect_graph = self._check_graph(self.graph, X)
        train_cfg = self._fit_config()
        train_cfg.validate()
        pretrain_cfg = PretrainConfig(
            epochs=self.pretrain_epochs, batch_size=self.pretrain_batch_size,
            lr=self.pretrain_lr, noise=self.ae_noise,
        )
        pretrain_cfg.validate()
        recipe = self._recipe(X)
        likelihood = self._make_likelihood(X)
        device = resolve_device(self.device)
        rng = check_random_state(self.random_state)
        seed = seed_from(rng) if not isinstance(self.random_state, (int, np.integer)) else int(
            self.random_state)
        run_dir = None
        if self.checkpoint_dir is not None:
            run_dir = Path(self.checkpoint_dir)
            run_dir.mkdir(parents=True, exist_ok=True)
        res: ModelFit = fit_cluster_model(
            X, recipe=recipe, n_clusters=int(self.n_clusters), likelihood=likelihood,
            init=_resolve_init(self.init), pretrain=pretrain_cfg, train=train_cfg,
            regularizer=reg, seed=seed, device=device, y=yv, run_dir=run_dir,
            resume=bool(self.resume), callbacks=tuple(self.callbacks or ()),
            verbose=bool(self.verbose),
        )
        self.model_ = res.model
        self.likelihood_ = likelihood
        self.n_features_in_ = X.shape[1]
        self.seed_ = res.seed
        self.proba_ = res.gamma
        self.labels_ = res.gamma.argmax(1).astype(np.int64)
        self.embedding_ = res.embedding
        self.init_ = res.init
        self.pi_ = res.pi
        self.history_ = res.history
        self.stage_times_ = res.stage_times
        self.graph_regularizer_ = res.regularizer
        self.graph_ = res.regularizer.graph if res.regularizer is not None else inspect_graph
        self._affinity = None if self.graph_ is None else affinity_on_edges(self.proba_, self.graph_)
        return self


_MODEL_DOC = """
    graph_regularizer : GraphRegularizer or None
        DGG's neighbour term as a plug-in: each node's objective becomes
        ``(1 - weight) own_i + weight * sum_j w_ij L(x_i, x_j)`` over the regulariser's graph
        (see graphclust.models.regularizer). ``None``: the model's own objective.
    graph : KNNGraph or None
        A graph of ``X`` for inspection only (``affinity_matrix_`` on its edges) when there
        is no regulariser.
    n_clusters : int
        Number of clusters ``K`` (2 <= K <= n_samples).
    latent_dim : int
        Latent dimension.
    likelihood : {"auto", "bernoulli", "gaussian", "multinomial"} or Likelihood
        ``auto``: Bernoulli when every value lies in [0, 1], else Gaussian.
    init : {"gmm", "umap", "umap-input", "umap-input-consensus"} or callable
        Clustering that starts the model (as for DGG).
    n_epochs, batch_size, lr, weight_decay, lr_step, lr_gamma :
        Adam with ``StepLR(lr_step, lr_gamma)``; ``batch_size`` anchors per batch.
    max_grad_norm : float or None
        Gradient-norm clipping.
    pretrain_epochs, pretrain_batch_size, pretrain_lr, ae_noise :
        Denoising autoencoder pretraining (shared with DGG/VaDE).
    checkpoint_dir : path, optional
        Folder for stage artifacts and per-epoch checkpoints (created if missing).
    resume : bool
        Reuse finished stages and continue from the last checkpoint in ``checkpoint_dir``.
    callbacks : sequence of callables, optional
        ``callback(record, history)`` after every training epoch.
    device : {"auto", "cpu", "cuda", ...}
    random_state : int, numpy Generator or None
        One seed fixes the whole run (no global RNG is touched).
    verbose : bool

    Attributes
    ----------
    labels_, proba_, embedding_, history_, init_, stage_times_ :
        As for :class:`DGG`.
    graph_ : KNNGraph or None
        The regulariser's graph (built after pretraining when it held a builder), else ``graph``.
    pi_ : ndarray of shape (n_samples, n_clusters) or None
        Node mixing weights of the regulariser (``pi="graph"``).
    affinity_matrix_ : scipy CSR (n, n)
        ``sum_k gamma_ik gamma_jk`` on the edges of ``graph_``.
"""


class GMVAE(_ModelClusterer):
    """The Gaussian-mixture VAE of the slides (NVISA, seed 001): ``q(z | y, x)``, VIMCO, std annealing.

    ``q(y, z | x) = q(y | x) q(z | y, x)`` without the mean-field assumption, trained on the
    VIMCO bound with ``n_samples`` samples per row; the standard deviations of ``q(z | y, x)``
    and of the decoder (Gaussian data) are ``softplus(.) + eps`` with ``eps`` annealed from
    ``std_anneal[0]`` to ``std_anneal[1]`` over ``anneal_epochs`` (default: all epochs).
    Started from the pretrained AE + GMM (the slides' best MNIST variant). See
    :mod:`graphclust.models.nvisa`.

    Parameters
    ----------
    hidden : sequence of int
        Encoder widths (decoder mirrored); default D-500-500-2000-10.
    n_samples : int
        VIMCO samples per row (>= 2; the slides use 15).
    std_anneal : (float, float)
        Start and end of the standard-deviation floor.
    anneal_epochs : int or None
    likelihood : {"auto", "bernoulli", "gaussian", "multinomial"} or Likelihood
        ``gaussian`` here is a Gaussian with a learned, annealed standard deviation.
    """

    def __init__(
        self,
        n_clusters: int = 10,
        graph_regularizer: GraphRegularizer | None = None,
        graph: KNNGraph | None = None,
        latent_dim: int = 10,
        hidden: Sequence[int] = (500, 500, 2000),
        n_samples: int = 15,
        std_anneal: tuple[float, float] = (0.5, 0.01),
        anneal_epochs: int | None = None,
        likelihood: Any = "auto",
        init: Any = "gmm",
        n_epochs: int = 30,
        batch_size: int = 256,
        lr: float = 5e-4,
        weight_decay: float = 0.0,
        lr_step: int = 10,
        lr_gamma: float = 0.9,
        max_grad_norm: float | None = 10.0,
        pretrain_epochs: int = 20,
        pretrain_batch_size: int = 256,
        pretrain_lr: float = 1e-3,
        ae_noise: float = 0.2,
        checkpoint_dir: str | Path | None = None,
        resume: bool = False,
        callbacks: Sequence[Callable] | None = None,
        device: str = "auto",
        random_state: int | np.random.Generator | None = None,
        verbose: bool = True,
    ) -> None:
        self.n_clusters = n_clusters
        self.graph_regularizer = graph_regularizer
        self.graph = graph
        self.latent_dim = latent_dim
        self.hidden = hidden
        self.n_samples = n_samples
        self.std_anneal = std_anneal
        self.anneal_epochs = anneal_epochs
        self.likelihood = likelihood
        self.init = init
        self.n_epochs = n_epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.lr_step = lr_step
        self.lr_gamma = lr_gamma
        self.max_grad_norm = max_grad_norm
        self.pretrain_epochs = pretrain_epochs
        self.pretrain_batch_size = pretrain_batch_size
        self.pretrain_lr = pretrain_lr
        self.ae_noise = ae_noise
        self.checkpoint_dir = checkpoint_dir
        self.resume = resume
        self.callbacks = callbacks
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    def _annealing(self) -> StdAnnealing:
        try:
            start, end = (float(v) for v in self.std_anneal)
        except (TypeError, ValueError):
            raise GraphclustError(
                f"std_anneal must be two numbers (start, end), got {self.std_anneal!r}") from None
        ann = StdAnnealing(start, end, _check_int(self.anneal_epochs, "anneal_epochs", 1,
                                                  allow_none=True))
        ann.validate()
        return ann

    def _make_likelihood(self, X: np.ndarray):
        spec = str(self.likelihood).lower() if isinstance(self.likelihood, str) else None
        if spec == "gaussian" or (spec == "auto" and infer_likelihood(X) == "gaussian"):
            return LearnedStdGaussianLikelihood(eps=self._annealing().start)
        return super()._make_likelihood(X)

    def _recipe(self, X: np.ndarray) -> NVISARecipe:
        n_samples = _check_int(self.n_samples, "n_samples", 2)
        return NVISARecipe(int(self.latent_dim), check_hidden(self.hidden), n_samples,
                           self._annealing())


class KDVAE(_ModelClusterer):
    """k-DVAE (seed 003): ``k`` VAE encoder/decoder pairs, hard-max ELBO clustering.

    Every pair is a VAE with an ``N(0, I)`` prior; a row belongs to the pair with the best
    ELBO (training: ``max_i ELBO_i``; prediction: eq. 8 with the latent means). The ``k``
    pairs run as stacked networks (one batched matmul per layer). Started from the shared
    autoencoder's latent clustering, each pair pretrained on its initial cluster. See
    :mod:`graphclust.models.kdvae`.

    Parameters
    ----------
    hidden : sequence of int
        Encoder widths of each pair (seed: D-500-100-10; decoders mirrored).
    init_hidden : sequence of int
        Widths of the single autoencoder whose latent clustering starts the pairs.
    pair_epochs : int
        Epochs of pretraining each pair on its initial cluster.

    Notes
    -----
    ``transform`` returns every pair's latent mean side by side, shape
    ``(n_samples, n_clusters * latent_dim)``.
    """

    _variational = True

    def __init__(
        self,
        n_clusters: int = 10,
        graph_regularizer: GraphRegularizer | None = None,
        graph: KNNGraph | None = None,
        latent_dim: int = 10,
        hidden: Sequence[int] = (500, 100),
        init_hidden: Sequence[int] = (500, 500, 2000),
        pair_epochs: int = 10,
        likelihood: Any = "auto",
        init: Any = "gmm",
        n_epochs: int = 30,
        batch_size: int = 256,
        lr: float = 5e-4,
        weight_decay: float = 0.0,
        lr_step: int = 10,
        lr_gamma: float = 0.9,
        max_grad_norm: float | None = None,
        pretrain_epochs: int = 20,
        pretrain_batch_size: int = 256,
        pretrain_lr: float = 1e-3,
        ae_noise: float = 0.2,
        checkpoint_dir: str | Path | None = None,
        resume: bool = False,
        callbacks: Sequence[Callable] | None = None,
        device: str = "auto",
        random_state: int | np.random.Generator | None = None,
        verbose: bool = True,
    ) -> None:
        self.n_clusters = n_clusters
        self.graph_regularizer = graph_regularizer
        self.graph = graph
        self.latent_dim = latent_dim
        self.hidden = hidden
        self.init_hidden = init_hidden
        self.pair_epochs = pair_epochs
        self.likelihood = likelihood
        self.init = init
        self.n_epochs = n_epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.lr_step = lr_step
        self.lr_gamma = lr_gamma
        self.max_grad_norm = max_grad_norm
        self.pretrain_epochs = pretrain_epochs
        self.pretrain_batch_size = pretrain_batch_size
        self.pretrain_lr = pretrain_lr
        self.ae_noise = ae_noise
        self.checkpoint_dir = checkpoint_dir
        self.resume = resume
        self.callbacks = callbacks
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    def _recipe(self, X: np.ndarray) -> KAutoencoderRecipe:
        pair_epochs = _check_int(self.pair_epochs, "pair_epochs", 0)
        return KAutoencoderRecipe(self._variational, int(self.latent_dim), check_hidden(self.hidden),
                                  check_hidden(self.init_hidden, "init_hidden"), pair_epochs)


class KDAE(KDVAE):
    """k-DAE (Opochinsky et al., 2020; the seed 003 ablation): ``k`` autoencoders, a row belongs to
    the one that reconstructs it best (training: ``max_i ln p(x | AE_i(x))``).

    Same parameters and pipeline as :class:`KDVAE`, without the variational part.
    """

    _variational = False


class VCAMI(_ModelClusterer):
    """VCAMI (seed 004): clustering by augmented mutual-information maximisation with a GMM constraint.

    Maximises a global and a local Jensen-Shannon MI estimate between ``x`` and ``z``, the
    discrete MI between the cluster assignments of ``x`` and of an augmentation of it, and
    keeps ``z`` near a Gaussian mixture (``gmm_weight``) and the assignments near uniform
    (``reg_weight``). Started from the shared AE + GMM, the head fitted to its clusters.
    See :mod:`graphclust.models.vcami`.

    Parameters
    ----------
    hidden : sequence of int
        Encoder widths; default D-500-500-2000-10.
    augment : "auto" or callable
        ``(x, generator) -> x_aug`` on a batch; ``auto``: small shifts/rotations for images
        (``image_shape`` given), masking + noise for other vectors (graphclust.data.augment).
    image_shape : tuple of int or None
        Shape of one image when rows are flattened images (``LoadedData.image_shape``).
    lmi_weight, cmi_weight, gmm_weight, reg_weight : float
        The seed's ``lambda``, ``alpha``, ``beta``, ``gamma``.
    disc_hidden : sequence of int
        Hidden widths of the two discriminators.
    """

    def __init__(
        self,
        n_clusters: int = 10,
        graph_regularizer: GraphRegularizer | None = None,
        graph: KNNGraph | None = None,
        latent_dim: int = 10,
        hidden: Sequence[int] = (500, 500, 2000),
        augment: Any = "auto",
        image_shape: Sequence[int] | None = None,
        lmi_weight: float = 0.5,
        cmi_weight: float = 1.0,
        gmm_weight: float = 0.01,
        reg_weight: float = 0.1,
        disc_hidden: Sequence[int] = (256,),
        likelihood: Any = "auto",
        init: Any = "gmm",
        n_epochs: int = 30,
        batch_size: int = 256,
        lr: float = 5e-4,
        weight_decay: float = 0.0,
        lr_step: int = 10,
        lr_gamma: float = 0.9,
        max_grad_norm: float | None = None,
        pretrain_epochs: int = 20,
        pretrain_batch_size: int = 256,
        pretrain_lr: float = 1e-3,
        ae_noise: float = 0.2,
        checkpoint_dir: str | Path | None = None,
        resume: bool = False,
        callbacks: Sequence[Callable] | None = None,
        device: str = "auto",
        random_state: int | np.random.Generator | None = None,
        verbose: bool = True,
    ) -> None:
        self.n_clusters = n_clusters
        self.graph_regularizer = graph_regularizer
        self.graph = graph
        self.latent_dim = latent_dim
        self.hidden = hidden
        self.augment = augment
        self.image_shape = image_shape
        self.lmi_weight = lmi_weight
        self.cmi_weight = cmi_weight
        self.gmm_weight = gmm_weight
        self.reg_weight = reg_weight
        self.disc_hidden = disc_hidden
        self.likelihood = likelihood
        self.init = init
        self.n_epochs = n_epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.lr_step = lr_step
        self.lr_gamma = lr_gamma
        self.max_grad_norm = max_grad_norm
        self.pretrain_epochs = pretrain_epochs
        self.pretrain_batch_size = pretrain_batch_size
        self.pretrain_lr = pretrain_lr
        self.ae_noise = ae_noise
        self.checkpoint_dir = checkpoint_dir
        self.resume = resume
        self.callbacks = callbacks
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    def _augmenter(self, X: np.ndarray):
        if self.augment == "auto":
            aug = default_augmenter(self.image_shape)
        elif callable(self.augment):
            aug = self.augment
        else:
            raise GraphclustError(
                f"augment must be 'auto' or a callable (x, generator) -> x_aug, got {self.augment!r}"
            )
        check = getattr(aug, "check", None)
        if check is not None:
            check(X.shape[1])
        return aug

    def _recipe(self, X: np.ndarray) -> VCAMIRecipe:
        weights = VCAMIWeights(lmi=float(self.lmi_weight), cmi=float(self.cmi_weight),
                               gmm=float(self.gmm_weight), reg=float(self.reg_weight))
        weights.validate()
        if self.batch_size < 2:
            raise GraphclustError("VCAMI needs batch_size >= 2 (negative pairs come from the batch)")
        return VCAMIRecipe(self._augmenter(X), int(self.latent_dim), check_hidden(self.hidden),
                           check_hidden(self.disc_hidden, "disc_hidden"), weights)


for _cls in (GMVAE, KDVAE, KDAE, VCAMI):
    _cls.__doc__ += _MODEL_DOC

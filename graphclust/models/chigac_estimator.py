"""The sklearn-style front door of CHiGac (:class:`CHiGac`) and its training loop.

CHiGac is *amortised*: it is trained once on many labelled data sets (generated CRP
mixtures, or CRP episodes drawn from a labelled data set), then clusters new data sets in
one forward pass each, inferring their number of clusters::

    model = CHiGac(n_steps=2000, random_state=0).fit()      # train on 2-D CRP mixtures
    labels = model.predict(X_new)                            # any (n, 2) data set
    model.n_clusters_, model.membership_                     # K_hat, per-point scores

:func:`train_chigac` is the procedure behind ``fit`` (and ``graphclust train-chigac``). Every
step ``t`` draws its episodes and noise from ``numpy.random.default_rng([seed, t + 1])``, so
a run resumed from any checkpoint continues exactly as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClusterMixin
from sklearn.utils.validation import check_is_fitted
from tqdm.auto import tqdm

from graphclust.data.synthetic import (
    LabelledEpisodes,
    MixtureEpisodes,
    graph_to_data,
    points_to_data,
    standardize,
)
from graphclust.graph.graph import KNNGraph, data_fingerprint
from graphclust.models.checkpoint import load_state, save_state
from graphclust.models.chigac import (
    ChigacConfig,
    ChigacModel,
    Clustering,
    check_min_cluster_size,
    infer_clusters,
)
from graphclust.utils import (
    GraphclustError,
    SubnormalGuard,
    atomic_path,
    check_features,
    check_random_state,
    prepare_output,
    resolve_device,
    torch_generator,
)

__all__ = ["CHiGac", "ChigacTrainConfig", "StepCallback", "step_rng", "train_chigac"]

_FORMAT = "graphclust.models.CHiGac"
_FORMAT_VERSION = 1
_META_KEY = "graphclust"
_CONFIG_FIELDS = tuple(ChigacConfig.__dataclass_fields__)

#: ``callback(record, history)`` after every training step (after any checkpoint of that step)
StepCallback = Callable[[dict, list], None]


# =========================================================================== training loop
@dataclass(frozen=True)
class ChigacTrainConfig:
    """Optimisation settings (design note 6.2, CPU column).

    Attributes
    ----------
    n_steps : int
        Optimiser steps (one batch of episodes each).
    batch_size : int
        Episodes (data sets) per batch ``B``.
    lr, weight_decay : float
        Adam (weight decay = L2).
    clip : float
        Gradient-norm clip.
    lr_drop_step : int or None
        From this step on the learning rate is ``lr * lr_drop``; ``None``: ``n_steps // 2``.
    lr_drop : float
    checkpoint_every : int
        Steps between checkpoints (the last step is always saved).
    """

    n_steps: int = 5000
    batch_size: int = 8
    lr: float = 1e-4
    weight_decay: float = 1e-4
    clip: float = 10.0
    lr_drop_step: int | None = None
    lr_drop: float = 0.1
    checkpoint_every: int = 50

    def __post_init__(self) -> None:
        _check_int("n_steps", self.n_steps, 0)
        _check_int("batch_size", self.batch_size, 1)
        _check_int("checkpoint_every", self.checkpoint_every, 1)
        if self.lr_drop_step is not None:
            _check_int("lr_drop_step", self.lr_drop_step, 0)
        _check_real("lr", self.lr, strict=True)
        _check_real("weight_decay", self.weight_decay)
        _check_real("clip", self.clip, strict=True)
        _check_real("lr_drop", self.lr_drop, strict=True)

    @property
    def drop_at(self) -> int:
        return self.n_steps // 2 if self.lr_drop_step is None else int(self.lr_drop_step)

    def lr_at(self, step: int) -> float:
        """Learning rate of (0-based) step ``step``."""
        return self.lr * (self.lr_drop if step >= self.drop_at else 1.0)

    def resume_key(self) -> dict[str, Any]:
        """What must match for a checkpoint to be continued (``n_steps`` may grow)."""
        d = asdict(self)
        d.pop("n_steps")
        d.pop("checkpoint_every")
        d["lr_drop_step"] = self.drop_at
        return d


def _check_int(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise GraphclustError(f"{name} must be an integer >= {low}, got {value!r}")


def _check_real(name: str, value: Any, strict: bool = False) -> None:
    ok = (not isinstance(value, bool) and isinstance(value, numbers.Real)
          and math.isfinite(value) and (value > 0 if strict else value >= 0))
    if not ok:
        raise GraphclustError(f"{name} must be a finite number {'> 0' if strict else '>= 0'}, "
                              f"got {value!r}")


def step_rng(seed: int, step: int) -> np.random.Generator:
    """The generator of (0-based) training step ``step``: episodes, then a torch seed."""
    return np.random.default_rng([int(seed), int(step) + 1])


def train_chigac(
    model: ChigacModel,
    episodes,
    config: ChigacTrainConfig,
    seed: int,
    checkpoint: str | Path | None = None,
    resume: bool = False,
    fingerprint: str = "",
    callbacks: Sequence[StepCallback] = (),
    verbose: bool = False,
) -> list[dict]:
    """Train ``model`` on batches drawn from ``episodes``; return the per-step history.

    Parameters
    ----------
    model : ChigacModel
        On the device training runs on.
    episodes : EpisodeSource
        ``sample(n_graphs, rng) -> Batch`` of labelled data sets
        (:class:`~graphclust.data.synthetic.MixtureEpisodes`, ``LabelledEpisodes``, ...).
    config : ChigacTrainConfig
    seed : int
        Step ``t`` uses :func:`step_rng` ``(seed, t)``; nothing else is random.
    checkpoint : path, optional
        Training state (model, optimiser, history), written atomically every
        ``config.checkpoint_every`` steps and after the last one.
    resume : bool
        Continue from ``checkpoint`` when it exists.
    fingerprint : str
        Identifies the model and data settings; a checkpoint with another is refused.
    callbacks : sequence of callables
        ``callback(record, history)`` after every step.
    verbose : bool
        A tqdm bar with the current loss.

    Returns
    -------
    list of dict
        One record per step: ``step``, ``loss``, ``membership``, ``anchor_kl``, ``n_nodes``,
        ``n_steps`` (cluster steps of the batch), ``lr``, ``seconds``.
    """
    device = next(model.parameters()).device
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=config.lr,
                           weight_decay=config.weight_decay)
    guard = SubnormalGuard(opt)
    key = json.dumps({"fingerprint": fingerprint, "train": config.resume_key(), "seed": int(seed)},
                     sort_keys=True)
    history: list[dict] = []
    start = 0
    ckpt = None if checkpoint is None else Path(checkpoint)
    if resume and ckpt is not None and ckpt.is_file():
        state = load_state(ckpt)
        if state.get("key") != key:
            raise GraphclustError(
                f"checkpoint {ckpt} was written with other settings (model, data, seed or "
                "optimiser); use the original settings, or start over without resume (--force)"
            )
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        history = list(state["history"])
        start = int(state["step"])
        if start > config.n_steps:
            raise GraphclustError(
                f"checkpoint {ckpt} is at step {start}, beyond n_steps={config.n_steps}; "
                "ask for at least as many steps to resume"
            )

    def save(step: int) -> None:
        if ckpt is not None:
            save_state(ckpt, {"key": key, "step": step, "model": model.state_dict(),
                              "optimizer": opt.state_dict(), "history": history})

    model.train()
    bar = tqdm(range(start, config.n_steps), desc="chigac", unit="step", disable=not verbose,
               initial=start, total=config.n_steps)
    for step in bar:
        t0 = time.perf_counter()
        rng = step_rng(seed, step)
        data = episodes.sample(config.batch_size, rng).to(device)
        gen = torch_generator(rng, device)
        lr = config.lr_at(step)
        for group in opt.param_groups:
            group["lr"] = lr
        terms = model.loss(data, gen)
        opt.zero_grad(set_to_none=True)
        terms.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip)
        opt.step()
        guard.step()
        loss = float(terms.loss.detach())
        if not math.isfinite(loss):
            raise GraphclustError(
                f"the training loss became {loss} at step {step + 1}; lower the learning rate "
                "or the EAI step size (the last checkpoint is intact)"
            )
        record = {"step": step + 1, "loss": loss, "membership": terms.membership,
                  "anchor_kl": terms.anchor_kl, "n_nodes": int(data.num_nodes),
                  "n_steps": int(terms.n_steps), "lr": lr,
                  "seconds": time.perf_counter() - t0}
        history.append(record)
        if (step + 1) % config.checkpoint_every == 0 or step + 1 == config.n_steps:
            save(step + 1)
        bar.set_postfix(loss=f"{loss:.4f}")
        for cb in callbacks:
            cb(record, history)
    bar.close()
    model.eval()
    return history


# =========================================================================== estimator
class CHiGac(ClusterMixin, BaseEstimator):
    """Amortised clustering with an inferred number of clusters (CHiGac on kNN graphs).

    ``fit`` trains on labelled episodes (by default the seed's 2-D CRP mixtures of
    Gaussians); ``predict(X)`` then clusters any new data set without retraining. Inputs
    are standardised per data set (median, pooled MAD) and get a kNN graph with
    ``n_neighbors`` neighbours.

    Parameters
    ----------
    n_neighbors : int, default 15
        ``J`` of every kNN graph (training episodes and predicted data sets).
    dim, heads, n_layers, n_tokens, latent_dim, hidden, dropout, tau, repulsion, lambda_rep, \
anchor_prior, n_z_samples, n_anchor_samples, anchor_grad, eai_steps, eai_lr, eai_weights, \
kl_weight :
        Model and objective, see :class:`~graphclust.models.chigac.ChigacConfig`.
    n_steps, batch_size, lr, weight_decay, clip, lr_drop_step :
        Training, see :class:`ChigacTrainConfig`.
    n_range : (int, int), default (50, 300)
        Points per training episode.
    sigma_mu, sigma : float, default 10, 1
        Spread of the generated mixture centres / within clusters.
    max_train_clusters : int, default 30
        Generated episodes with more clusters are rejected.
    n_features : int, default 2
        Dimension of generated episodes when ``fit`` gets no ``X``.
    episodes : EpisodeSource, optional
        An object with ``sample(n_graphs, rng) -> Batch`` and ``n_features``; overrides the
        generated mixtures and ``(X, y)`` episodes.
    max_clusters : int, default 100
        Cap ``K_max`` on the clusters found per data set.
    min_cluster_size : int or float, default 1
        Smaller clusters are merged into the nearest one after the loop (1: off). A float
        in (0, 1) is a share of the data set's points (``ceil(f * N)``), for thresholds that
        grow with N as the few-point edge groups do.
    refine_steps : int, default 8
        Extra passes of the membership head per cluster step with the cluster latent at its
        posterior mean given the previous pass's members (as the head sees it in training;
        the passes stop once the memberships are stable); 0: the prior mean only, the
        design note's raw loop (:func:`~graphclust.models.chigac.infer_clusters`). With the
        bundled 2-D model, 8 took K exact on 3 far-apart blobs from 82 to 95 of 100 sets
        (92 on a second draw) and B1 ARI at N = 1k from 0.744 to 0.805.
    knn_method : str, default "exact"
        kNN search of :func:`graphclust.graph.knn.knn_search`.
    warm_start : bool, default False
        When ``fit`` is called on an estimator that already holds a model (fitted, or
        restored by :meth:`load`), train on from its weights instead of a fresh
        initialisation, e.g. meta-train on labelled episodes of real data a model trained
        on generated mixtures. The model settings and input dimension must be the same.
    checkpoint_dir : path, optional
        Folder for ``chigac_checkpoint.pt`` (training state, resumable).
    resume : bool, default False
        Continue from the checkpoint in ``checkpoint_dir``.
    device : str, default "auto"
    random_state : int, numpy Generator or None
        Seeds the initialisation and every training step.
    verbose : bool, default False
        Progress bar over training steps.

    Attributes
    ----------
    model_ : ChigacModel
        The trained networks (eval mode).
    history_ : list of dict
        One record per training step.
    n_features_in_ : int
    labels_ : ndarray of shape (n_samples,)
        Clusters of the data set last clustered (by ``fit(X)``, ``fit_predict`` or ``predict``).
    n_clusters_ : int
        Its number of clusters ``K_hat``.
    membership_ : ndarray of shape (n_samples,)
        Score ``sigmoid(l_i)`` with which each point joined its cluster (1 for anchors).
    anchors_ : ndarray of shape (n_found,)
        The anchor point of each inference step, i.e. of each cluster as found (before
        any ``min_cluster_size`` merge).
    capped_ : bool
        Whether the ``max_clusters`` cap was hit.
    n_merged_ : int
        Clusters merged by ``min_cluster_size``.
    """

    def __init__(
        self,
        n_neighbors: int = 15,
        dim: int = 64,
        heads: int = 4,
        n_layers: int = 2,
        n_tokens: int = 8,
        latent_dim: int = 32,
        hidden: int = 128,
        dropout: float = 0.1,
        tau: float = 0.1,
        repulsion: str = "corrected",
        lambda_rep: float = 1.0,
        anchor_prior: str = "learned",
        n_z_samples: int = 4,
        n_anchor_samples: int = 2,
        anchor_grad: str = "rloo",
        eai_steps: int = 1,
        eai_lr: float = 0.1,
        eai_weights: str = "uniform",
        kl_weight: float = 1.0,
        n_steps: int = 5000,
        batch_size: int = 8,
        lr: float = 1e-4,
        weight_decay: float = 1e-4,
        clip: float = 10.0,
        lr_drop_step: int | None = None,
        n_range: tuple[int, int] = (50, 300),
        sigma_mu: float = 10.0,
        sigma: float = 1.0,
        max_train_clusters: int = 30,
        n_features: int = 2,
        episodes: Any = None,
        max_clusters: int = 100,
        min_cluster_size: float = 1,
        refine_steps: int = 8,
        knn_method: str = "exact",
        warm_start: bool = False,
        checkpoint_dir: str | Path | None = None,
        resume: bool = False,
        device: str = "auto",
        random_state: int | np.random.Generator | None = None,
        verbose: bool = False,
    ) -> None:
        self.n_neighbors = n_neighbors
        self.dim = dim
        self.heads = heads
        self.n_layers = n_layers
        self.n_tokens = n_tokens
        self.latent_dim = latent_dim
        self.hidden = hidden
        self.dropout = dropout
        self.tau = tau
        self.repulsion = repulsion
        self.lambda_rep = lambda_rep
        self.anchor_prior = anchor_prior
        self.n_z_samples = n_z_samples
        self.n_anchor_samples = n_anchor_samples
        self.anchor_grad = anchor_grad
        self.eai_steps = eai_steps
        self.eai_lr = eai_lr
        self.eai_weights = eai_weights
        self.kl_weight = kl_weight
        self.n_steps = n_steps
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.clip = clip
        self.lr_drop_step = lr_drop_step
        self.n_range = n_range
        self.sigma_mu = sigma_mu
        self.sigma = sigma
        self.max_train_clusters = max_train_clusters
        self.n_features = n_features
        self.episodes = episodes
        self.max_clusters = max_clusters
        self.min_cluster_size = min_cluster_size
        self.refine_steps = refine_steps
        self.knn_method = knn_method
        self.warm_start = warm_start
        self.checkpoint_dir = checkpoint_dir
        self.resume = resume
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    # ------------------------------------------------------------------ configs
    def _model_config(self, in_dim: int) -> ChigacConfig:
        kwargs = {f: getattr(self, f) for f in _CONFIG_FIELDS if f not in ("in_dim", "eai_clip")}
        return ChigacConfig(in_dim=int(in_dim), **kwargs)

    def _train_config(self) -> ChigacTrainConfig:
        return ChigacTrainConfig(n_steps=self.n_steps, batch_size=self.batch_size, lr=self.lr,
                                 weight_decay=self.weight_decay, clip=self.clip,
                                 lr_drop_step=self.lr_drop_step)

    def _check_inference_params(self) -> None:
        _check_int("n_neighbors", self.n_neighbors, 1)
        _check_int("max_clusters", self.max_clusters, 1)
        check_min_cluster_size(self.min_cluster_size)
        _check_int("refine_steps", self.refine_steps, 0)

    def _episode_source(self, X, y):
        if self.episodes is not None:
            src = self.episodes
            if not (callable(getattr(src, "sample", None)) and hasattr(src, "n_features")):
                raise GraphclustError(
                    "episodes must have sample(n_graphs, rng) -> Batch and n_features (see "
                    f"graphclust.data.synthetic), got {type(src).__name__}"
                )
            return src
        if y is not None:
            if X is None:
                raise GraphclustError("y was given without X; pass the labelled data as fit(X, y)")
            return LabelledEpisodes(X, y, tuple(self.n_range), self.n_neighbors)
        dim = self.n_features if X is None else X.shape[1]
        return MixtureEpisodes(dim=int(dim), n_range=tuple(self.n_range), sigma_mu=self.sigma_mu,
                               sigma=self.sigma, max_clusters=self.max_train_clusters,
                               n_neighbors=self.n_neighbors)

    def _seed(self) -> int:
        rs = self.random_state
        if isinstance(rs, (int, np.integer)) and not isinstance(rs, bool):
            if rs < 0:
                raise GraphclustError(f"random_state must be >= 0, got {rs}")
            return int(rs)
        return int(check_random_state(rs).integers(0, 2**31 - 1))

    # ------------------------------------------------------------------ fitting
    def fit(self, X: Any = None, y: Any = None, callbacks: Sequence[StepCallback] = ()) -> CHiGac:
        """Train on episodes, then (when ``X`` is given) cluster ``X``.

        Episodes come from ``episodes`` when set, else from ``(X, y)`` when ``y`` is given,
        else from generated CRP mixtures.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features), optional
            With ``y``: the labelled data that training episodes are drawn from
            (meta-training). Without ``y``: fixes the input dimension of the generated
            mixtures. In both cases ``X`` is clustered after training (``labels_``).
        y : array-like of shape (n_samples,), optional
            Classes of ``X``.
        callbacks : sequence of callables
            ``callback(record, history)`` after every training step (see :func:`train_chigac`).

        Returns
        -------
        self
        """
        self._check_inference_params()
        Xc = None if X is None else check_features(X, min_samples=1)
        source = self._episode_source(Xc, y)
        config = self._model_config(source.n_features)
        tconf = self._train_config()
        dev = resolve_device(self.device)
        seed = self._seed()
        model = ChigacModel(config, torch_generator(np.random.default_rng([seed])))
        start_from = self._warm_start_weights(model)
        model = model.to(dev)
        checkpoint = None
        if self.checkpoint_dir is not None:
            folder = Path(self.checkpoint_dir)
            folder.mkdir(parents=True, exist_ok=True)
            checkpoint = folder / "chigac_checkpoint.pt"
        describe = getattr(source, "describe", lambda: {"kind": type(source).__name__})()
        fingerprint = json.dumps({"model": config.to_dict(), "episodes": describe,
                                  "warm_start_from": start_from}, sort_keys=True, default=str)
        self.history_ = train_chigac(model, source, tconf, seed, checkpoint=checkpoint,
                                     resume=bool(self.resume), fingerprint=fingerprint,
                                     callbacks=callbacks, verbose=bool(self.verbose))
        self.model_ = model.eval()
        self.n_features_in_ = int(config.in_dim)
        self.seed_ = seed
        self._cache = None
        if Xc is not None:
            self.predict(Xc)
        return self

    def _warm_start_weights(self, model: ChigacModel) -> str | None:
        """Load the held model's weights into ``model`` when warm-starting; their SHA-256."""
        held = getattr(self, "model_", None)
        if not self.warm_start or held is None:
            return None
        want, have = model.config.to_dict(), held.config.to_dict()
        diff = sorted(k for k in set(want) | set(have) if want.get(k) != have.get(k))
        if diff:
            details = ", ".join(f"{k}: {have.get(k)!r} -> {want.get(k)!r}" for k in diff)
            raise GraphclustError(
                f"warm_start needs the held model's settings, but this fit asks for other ones "
                f"({details}); fit with the held model's settings and data of its dimension, "
                "or set warm_start=False to train a new model")
        state = {k: v.detach().cpu() for k, v in held.state_dict().items()}
        model.load_state_dict(state)
        digest = hashlib.sha256()
        for k in sorted(state):
            digest.update(k.encode())
            digest.update(state[k].contiguous().numpy().tobytes())
        return digest.hexdigest()

    def fit_predict(self, X: Any, y: Any = None) -> np.ndarray:
        """``fit(X, y)`` then the clusters of ``X``."""
        return self.fit(X, y).labels_

    # ------------------------------------------------------------------ inference
    def cluster(self, X: Any, graph: KNNGraph | None = None) -> Clustering:
        """Cluster one data set and return every output of the inference loop.

        Also sets ``labels_``, ``n_clusters_``, ``membership_``, ``anchors_``, ``capped_`` and
        ``n_merged_`` (the attributes describe the data set clustered last).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        graph : KNNGraph, optional
            A kNN graph of ``X`` (e.g. from ``graphclust build-graph``) used instead of
            building one; its weights are recomputed from its distances.

        Returns
        -------
        Clustering
        """
        check_is_fitted(self, "model_")
        self._check_inference_params()
        Xc = check_features(X, min_samples=1)
        if Xc.shape[1] != self.n_features_in_:
            raise GraphclustError(
                f"X has {Xc.shape[1]} features but this CHiGac was trained on "
                f"{self.n_features_in_}; pass data with the same number of columns"
            )
        # the inference settings are part of the key: changing them must not return a stale
        # clustering of the same data
        fp = (data_fingerprint(Xc) + ("" if graph is None else f"/graph{id(graph)}")
              + f"/K{int(self.max_clusters)}/min{self.min_cluster_size!r}"
              + f"/refine{int(self.refine_steps)}/J{int(self.n_neighbors)}/{self.knn_method}"
              + f"/{self.model_.config!r}")
        cache = getattr(self, "_cache", None)
        if cache is not None and cache[0] == fp:
            result = cache[1]
        else:
            x = standardize(Xc).x
            if graph is not None:
                graph.check_matches(Xc, strict=False)
                data = graph_to_data(x, graph if x.shape[0] > 1 else None)
            else:
                data = points_to_data(x, self.n_neighbors, knn_method=self.knn_method,
                                      device="cpu")
            dev = next(self.model_.parameters()).device
            data = data.to(dev)
            result = infer_clusters(self.model_, data, int(self.max_clusters),
                                    self.min_cluster_size,
                                    refine_steps=int(self.refine_steps))
            with torch.no_grad():
                embedding = self.model_.encode(data).cpu().numpy().astype(np.float32)
            self._cache = (fp, result, embedding)
        self.labels_ = result.labels
        self.n_clusters_ = int(result.n_clusters[0])
        self.membership_ = result.membership
        anchors = result.anchors[:, 0]
        self.anchors_ = anchors[anchors >= 0]
        self.capped_ = bool(result.capped[0])
        self.n_merged_ = int(result.n_merged[0])
        return result

    def predict(self, X: Any, graph: KNNGraph | None = None) -> np.ndarray:
        """Cluster a new data set (no retraining); returns its labels ``(n_samples,)``."""
        return self.cluster(X, graph).labels

    def predict_proba(self, X: Any, graph: KNNGraph | None = None) -> np.ndarray:
        """Sequential membership probabilities ``(n_samples, n_clusters_)``, rows summing to 1.

        ``P[i, k] = p_ik prod_{l<k} (1 - p_il)`` over the steps before point ``i`` was
        assigned, with the remaining mass on its own cluster (see
        :class:`~graphclust.models.chigac.Clustering`).
        """
        return self.cluster(X, graph).proba

    def transform(self, X: Any, graph: KNNGraph | None = None) -> np.ndarray:
        """The encoder's node embeddings ``e`` of ``X``, shape (n_samples, dim)."""
        self.cluster(X, graph)
        return self._cache[2]

    # ------------------------------------------------------------------ persistence
    def _json_params(self) -> dict[str, Any]:
        params = self.get_params(deep=False)
        params.pop("episodes")
        params["n_range"] = [int(v) for v in params["n_range"]]
        params["checkpoint_dir"] = None
        params["resume"] = False
        params["device"] = str(params["device"])
        rs = params["random_state"]
        params["random_state"] = int(rs) if isinstance(rs, (int, np.integer)) else None
        return params

    def save(self, path: str | Path, overwrite: bool = True) -> Path:
        """Write the trained model to a ``.safetensors`` file (weights; settings as JSON metadata).

        Written atomically; no pickle. Returns the path.
        """
        from safetensors.torch import save_file

        check_is_fitted(self, "model_")
        path = prepare_output(path, force=overwrite)
        doc = {
            "format": _FORMAT,
            "format_version": _FORMAT_VERSION,
            "params": self._json_params(),
            "config": self.model_.config.to_dict(),
            "n_features_in": self.n_features_in_,
            "seed": getattr(self, "seed_", None),
            "n_train_steps": len(self.history_),
            "final_loss": self.history_[-1]["loss"] if self.history_ else None,
        }
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.model_.state_dict().items()}
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata={_META_KEY: json.dumps(doc)})
        return path

    @classmethod
    def load(cls, path: str | Path, device: str = "auto") -> CHiGac:
        """Restore a model written by :meth:`save` (``predict`` works at once).

        Raises
        ------
        GraphclustError
            When the file is missing, unreadable, or not a CHiGac model file.
        """
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise GraphclustError(f"cannot load {path}: no such file")
        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                metadata = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is no dict)
        except Exception as exc:  # damaged files raise several types
            raise GraphclustError(
                f"cannot load {path}: not a readable safetensors file ({exc})"
            ) from exc
        try:
            doc = json.loads(metadata[_META_KEY])
            if doc.get("format") != _FORMAT:
                raise KeyError("format")
            version = int(doc["format_version"])
            params = dict(doc["params"])
            config = ChigacConfig(**doc["config"])
        except (KeyError, TypeError, ValueError, json.JSONDecodeError) as exc:
            raise GraphclustError(
                f"cannot load {path}: it is not a CHiGac model written by CHiGac.save "
                "(missing or malformed graphclust metadata)"
            ) from exc
        if version > _FORMAT_VERSION:
            raise GraphclustError(
                f"cannot load {path}: format version {version}; this graphclust reads up to "
                f"{_FORMAT_VERSION}; upgrade graphclust"
            )
        known = cls().get_params(deep=False)
        params = {k: v for k, v in params.items() if k in known}
        params["n_range"] = tuple(params.get("n_range", known["n_range"]))
        params["device"] = device
        est = cls(**params)
        model = ChigacModel(config, torch.Generator())
        try:
            model.load_state_dict(tensors, strict=True)
        except RuntimeError as exc:
            raise GraphclustError(
                f"cannot load {path}: its weights do not match its model description ({exc})"
            ) from exc
        est.model_ = model.to(resolve_device(device)).eval()
        est.n_features_in_ = int(doc["n_features_in"])
        est.history_ = []
        est.seed_ = doc.get("seed")
        est._cache = None
        return est

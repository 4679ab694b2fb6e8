"""The staged pipeline of the models built on :class:`~graphclust.models.loop.ClusterModel`.

:func:`fit_cluster_model` runs the same stages as DGG's
:func:`~graphclust.models.pipeline.fit_gmvae`, with the same artifacts, fingerprints and
resume rules, and a *recipe* object for what differs between models:

=====================  ==========================================================
``ae.safetensors``     the autoencoder after denoising pretraining (the shared
                       :func:`~graphclust.models.pretrain.pretrain_autoencoder`)
``init.npz``           latent clustering of its latent means (the shared initialisers)
``graph.npz``          graph of a :class:`GraphRegularizer` holding a builder
``pretrained.safetensors``  the model after its recipe's ``start`` (prior, head, pairs)
``checkpoint.pt``      training state after the last finished epoch
``model.safetensors``  final model
=====================  ==========================================================

A recipe provides ``name``, ``config() -> dict``, ``build(in_dim, n_clusters, likelihood,
generator) -> model``, ``autoencoder(model, in_dim, n_clusters, likelihood, generator)``
(the network to pretrain: the model itself, or a separate one whose latent clustering only
starts the model) and ``start(model, ae, X, latent, init, batch_size, lr, generator,
verbose)``. See :mod:`graphclust.models.nvisa`, :mod:`graphclust.models.kdvae`,
:mod:`graphclust.models.vcami`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from graphclust.graph.graph import KNNGraph, data_fingerprint
from graphclust.models.checkpoint import config_fingerprint, load_weights, save_weights
from graphclust.models.loop import FitConfig, train_cluster_model
from graphclust.models.pipeline import (
    STAGES,
    PretrainConfig,
    _gen,
    _load_init,
    _save_init,
    _Stage,
)
from graphclust.models.pretrain import InitResult, pretrain_autoencoder, run_init
from graphclust.models.regularizer import GraphRegularizer
from graphclust.models.training import EpochCallback
from graphclust.nn.likelihood import Likelihood
from graphclust.utils import GraphclustError

__all__ = ["RUN_STAGES", "ModelFit", "fit_cluster_model", "run_seeds"]

#: Random consumers: DGG's (same seeds for the same run seed) plus the model start.
RUN_STAGES = (*STAGES, "start")


class ModelFit(NamedTuple):
    """Everything :func:`fit_cluster_model` learned.

    Attributes
    ----------
    model : torch.nn.Module
    gamma : ndarray of shape (n_samples, n_clusters)
    pi : ndarray of shape (n_samples, n_clusters) or None
        Node mixing weights of the graph regulariser (``pi="graph"``).
    embedding : ndarray of shape (n_samples, embedding_dim)
    regularizer : GraphRegularizer or None
        With the graph it trained on (built by the pipeline when it held a builder).
    init : InitResult
    history : list of dict
    stage_times : dict
    seed : int
    """

    model: nn.Module
    gamma: np.ndarray
    pi: np.ndarray | None
    embedding: np.ndarray
    regularizer: GraphRegularizer | None
    init: InitResult
    history: list
    stage_times: dict
    seed: int


def run_seeds(seed: int) -> dict[str, int]:
    """One 63-bit seed per name in :data:`RUN_STAGES`; the first ones equal
    :func:`~graphclust.models.pipeline.stage_seeds` (``SeedSequence.spawn`` is sequential)."""
    children = np.random.SeedSequence(int(seed)).spawn(len(RUN_STAGES))
    return {name: int(c.generate_state(1, np.uint64)[0] >> np.uint64(1))
            for name, c in zip(RUN_STAGES, children)}


@torch.no_grad()
def _ae_latent(ae: nn.Module, X: torch.Tensor, batch_size: int = 4096) -> np.ndarray:
    """The pretrained autoencoder's latent means (``ae.encoder.embed``), shape (n, latent_dim)."""
    ae.eval()
    out = torch.cat([ae.encoder.embed(X[s : s + batch_size]) for s in range(0, X.shape[0], batch_size)])
    return out.cpu().numpy()


@torch.no_grad()
def _embed_all(model: nn.Module, X: torch.Tensor, batch_size: int = 4096) -> np.ndarray:
    was = model.training
    model.eval()
    out = torch.cat([model.embed(X[s : s + batch_size]) for s in range(0, X.shape[0], batch_size)])
    model.train(was)
    return out.cpu().numpy()


def fit_cluster_model(
    X: np.ndarray,
    *,
    recipe: Any,
    n_clusters: int,
    likelihood: Likelihood,
    init: Callable[[np.ndarray, int, int], InitResult],
    pretrain: PretrainConfig,
    train: FitConfig,
    regularizer: GraphRegularizer | None,
    seed: int,
    device: torch.device,
    y: np.ndarray | None = None,
    run_dir: str | Path | None = None,
    resume: bool = False,
    callbacks: Sequence[EpochCallback] = (),
    verbose: bool = False,
) -> ModelFit:
    """Pretrain, cluster the latent space, start and train a model given by ``recipe``.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features), float32, validated
    recipe : object
        See the module docstring.
    n_clusters : int
    likelihood : Likelihood
    init : callable
        ``(latent, n_clusters, random_state) -> InitResult``.
    pretrain : PretrainConfig
        Autoencoder pretraining (``epochs``, ``batch_size``, ``lr``, ``noise``).
    train : FitConfig
    regularizer : GraphRegularizer or None
        Validated against ``X`` by the caller; a builder is run after AE pretraining.
    seed : int
    device : torch.device
    y : ndarray, optional
        Labels for per-epoch metrics only.
    run_dir : path, optional
        Folder of the stage artifacts (must exist).
    resume : bool
    callbacks : sequence of callables
    verbose : bool
    """
    pretrain.validate()
    train.validate()
    run_dir = None if run_dir is None else Path(run_dir)
    if run_dir is not None and not run_dir.is_dir():
        raise GraphclustError(f"run folder {run_dir} does not exist; create it first")
    seeds = run_seeds(seed)
    times: dict[str, dict] = {}
    stage = _Stage(run_dir, resume, times, verbose)
    Xt = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32)).to(device)
    D = X.shape[1]
    weights_gen = _gen(seeds["weights"])
    model = recipe.build(D, n_clusters, likelihood, weights_gen).to(device)
    ae = recipe.autoencoder(model, D, n_clusters, likelihood, weights_gen).to(device)

    def snapshot(module: nn.Module) -> Callable[[], dict]:
        return lambda: {k: v.detach().clone() for k, v in module.state_dict().items()}

    def saver(path: Path, state: dict, meta: dict) -> None:
        save_weights(path, state, meta)

    # ---------------------------------------------------------------- 1. autoencoder
    base = {"data": data_fingerprint(X), "n_clusters": int(n_clusters),
            "likelihood": repr(likelihood), "recipe": recipe.config(), "seed": int(seed)}
    ae_cfg = {k: v for k, v in asdict(pretrain).items() if k not in ("head_C", "logvar_ratio")}
    fp_ae = config_fingerprint({**base, "pretrain": ae_cfg})

    def run_ae() -> dict:
        pretrain_autoencoder(ae, Xt, pretrain.epochs, pretrain.batch_size, pretrain.lr,
                             pretrain.noise, generator=_gen(seeds["pretrain_ae"]), verbose=verbose)
        return snapshot(ae)()

    ae.load_state_dict(stage("pretrain_ae", "ae.safetensors", fp_ae, run_ae, saver, load_weights))
    latent = _ae_latent(ae, Xt)

    # ---------------------------------------------------------------- 2. latent clustering
    fp_init = config_fingerprint({"ae": fp_ae, "init": repr(init)})
    init_result: InitResult = stage(
        "init", "init.npz", fp_init,
        lambda: run_init(init, latent, n_clusters, seeds["init"], data=X),
        _save_init, _load_init,
    )

    # ---------------------------------------------------------------- 3. graph (builder)
    if regularizer is not None and regularizer.needs_build:
        fp_graph = config_fingerprint({"ae": fp_ae, "builder": repr(regularizer.graph)})
        builder = regularizer.graph

        def save_graph(path: Path, g: KNNGraph, meta: dict) -> None:
            KNNGraph(g.indices, g.weights, g.distances, g.labels, {**g.meta, "stage": meta}).save(path)

        def load_graph(path: Path) -> tuple[KNNGraph, dict]:
            g = KNNGraph.load(path)
            return g, g.meta.get("stage", {})

        built = stage("graph", "graph.npz", fp_graph, lambda: builder(X, latent, str(device)),
                      save_graph, load_graph)
        built.check_matches(X)
        regularizer = regularizer.with_graph(built)
        regularizer.validate(X)

    # ---------------------------------------------------------------- 4. model start
    fp_start = config_fingerprint({"init": fp_init, "recipe": recipe.config()})

    def run_start() -> dict:
        recipe.start(model, ae, Xt, latent, init_result, pretrain.batch_size, pretrain.lr,
                     _gen(seeds["start"]), verbose)
        return snapshot(model)()

    model.load_state_dict(stage("start", "pretrained.safetensors", fp_start, run_start, saver,
                                load_weights))
    if ae is not model:
        del ae  # only its latent clustering was needed

    # ---------------------------------------------------------------- 5. training
    fp_train = config_fingerprint({
        "start": fp_start, "train": train.resume_key(),
        "regularizer": None if regularizer is None else regularizer.config(),
    })
    t0 = time.perf_counter()
    result = train_cluster_model(
        model, Xt, train, regularizer,
        batch_generator=_gen(seeds["batches"]),
        noise_generator=_gen(seeds["noise"], Xt.device),
        y=y,
        checkpoint=None if run_dir is None else run_dir / "checkpoint.pt",
        resume=resume, fingerprint=fp_train, callbacks=callbacks, verbose=verbose,
    )
    times["train"] = {
        "seconds": float(sum(r["time_s"] for r in result.history)),
        "cached": False,
        "wall_this_call": time.perf_counter() - t0,
        "epochs": len(result.history),
    }
    if run_dir is not None:
        save_weights(run_dir / "model.safetensors", model.state_dict(),
                     {"fingerprint": fp_train, "epochs": train.n_epochs})
    return ModelFit(
        model=model,
        gamma=result.gamma.cpu().numpy(),
        pi=None if result.pi is None else result.pi.cpu().numpy(),
        embedding=_embed_all(model, Xt),
        regularizer=regularizer,
        init=init_result,
        history=result.history,
        stage_times=times,
        seed=int(seed),
    )

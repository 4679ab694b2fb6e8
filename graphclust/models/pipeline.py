"""The staged mixture-model pipeline: AE -> latent clustering -> graph -> head -> DGG/VaDE.

:func:`fit_gmvae` is the procedure behind :class:`graphclust.estimators.DGG` and
:class:`graphclust.estimators.VaDE` and the ``graphclust train`` command. With a
``run_dir`` every stage writes its artifact atomically, and ``resume=True`` reuses the
artifacts of finished stages (refusing ones made with other settings) and continues the
training stage from its last per-epoch checkpoint:

=====================  ==========================================================
``ae.safetensors``     model after denoising-AE pretraining
``init.npz``           latent clustering (labels, diagonal GMM)
``graph.npz``          kNN graph built by the pipeline (DGG without a given graph)
``pretrained.safetensors``  model after prior init + head pretraining
``checkpoint.pt``      training state after the last finished epoch
``model.safetensors``  final model
=====================  ==========================================================

One integer seed fixes everything: it is split (``numpy.random.SeedSequence``) into one
seed per random consumer (weights, AE, latent clustering, batches, noise), so a stage
loaded from disk leaves the later stages' randomness unchanged.

With a :class:`~graphclust.distributed.DistContext` (``dist``), the pretraining stages run
(or load) on rank 0 only, which writes their artifacts and hands the results to the other
ranks; the training stage runs data-parallel on every rank (see
:mod:`graphclust.models.training`), and only rank 0 writes checkpoints and the final model.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from graphclust.distributed import DistContext
from graphclust.graph.graph import KNNGraph, build_knn_graph, data_fingerprint
from graphclust.models.checkpoint import config_fingerprint, load_weights, save_weights
from graphclust.models.mixture import GMVAE, ClassifierHead, build_gmvae
from graphclust.models.pretrain import (
    InitResult,
    apply_init,
    fit_to_labels,
    latent_means,
    pretrain_autoencoder,
    pretrain_head,
    run_init,
)
from graphclust.models.training import EpochCallback, TrainConfig, train_dgg
from graphclust.nn.likelihood import Likelihood
from graphclust.utils import GraphclustError, atomic_path

__all__ = ["STAGES", "FitResult", "KNNGraphBuilder", "PretrainConfig", "fit_gmvae", "stage_seeds"]

#: Random consumers, in the order their seeds are spawned from the run seed.
STAGES = ("weights", "pretrain_ae", "init", "batches", "noise", "label_fit")


@dataclass(frozen=True)
class PretrainConfig:
    """Pretraining hyper-parameters.

    Attributes
    ----------
    epochs, batch_size, lr :
        Denoising autoencoder (Adam).
    noise : float
        Masking-noise rate of the denoising AE (0: plain AE).
    head_C : float
        Inverse L2 strength of the classifier head, fitted as multinomial logistic
        regression on the initial labels.
    logvar_ratio : float
        Initial ``sigma~^2`` as a fraction of the mean prior variance.
    label_epochs : int
        Epochs of :func:`~graphclust.models.pretrain.fit_to_labels` after the prior is set
        (with the AE's ``batch_size`` and ``lr``): the ELBO with ``q(c | x)`` held at the
        start's labels reshapes the latent space around them and trains the prior with it;
        the head is then fitted on the new latent means. 0 (default) skips it. Worth it when
        the start comes from another space (UMAP, ``umap-input``) that a linear head on the
        AE latent cannot reproduce.
    label_weight : float
        Weight of the term ``ln q(c = label | x)`` in label fitting, which trains the
        cluster posterior to predict the start's labels along with the encoder (see
        :func:`~graphclust.models.pretrain.fit_to_labels`); 0 (default) leaves it out.
    """

    epochs: int = 20
    batch_size: int = 256
    lr: float = 1e-3
    noise: float = 0.2
    head_C: float = 1.0
    logvar_ratio: float = 0.1
    label_epochs: int = 0
    label_weight: float = 0.0

    def validate(self) -> None:
        if self.epochs < 0 or self.label_epochs < 0:
            raise GraphclustError("pretraining epochs and label_epochs must be >= 0")
        if not (math.isfinite(self.label_weight) and self.label_weight >= 0):
            raise GraphclustError(
                f"label_weight must be a finite number >= 0, got {self.label_weight}")
        if self.label_weight > 0 and self.label_epochs == 0:
            raise GraphclustError("label_weight > 0 needs label_epochs > 0 (it weights a term "
                                  "of label fitting)")
        if self.batch_size < 1:
            raise GraphclustError(f"pretraining batch_size must be >= 1, got {self.batch_size}")
        if not 0 <= self.noise < 1:
            raise GraphclustError(f"noise must lie in [0, 1), got {self.noise}")
        if not self.lr > 0 or not self.head_C > 0 or not self.logvar_ratio > 0:
            raise GraphclustError("lr, head_C and logvar_ratio must be > 0")


class KNNGraphBuilder:
    """Build the training graph inside the pipeline.

    Parameters
    ----------
    k : int
        Neighbours per node.
    space : {"latent", "input"}
        ``latent``: on the pretrained AE's latent means (10-d, cheap to search and purer than
        raw pixels on MNIST, design note section 9); ``input``: on the data.
    kernel : str
        Affinity kernel (self-tuning ``gaussian`` by default).
    method : str
        kNN search method (see :func:`graphclust.graph.knn.knn_search`).
    """

    def __init__(self, k: int = 20, space: str = "latent", kernel: str = "gaussian",
                 method: str = "exact") -> None:
        if space not in ("latent", "input"):
            raise GraphclustError(f"graph space must be 'latent' or 'input', got {space!r}")
        self.k, self.space, self.kernel, self.method = int(k), space, kernel, method

    def __repr__(self) -> str:
        return (f"KNNGraphBuilder(k={self.k}, space={self.space!r}, kernel={self.kernel!r}, "
                f"method={self.method!r})")

    def __call__(self, X: np.ndarray, latent: np.ndarray, device: str = "auto") -> KNNGraph:
        if not 1 <= self.k < X.shape[0]:
            raise GraphclustError(
                f"n_neighbors={self.k} needs at least {self.k + 1} samples, got {X.shape[0]}"
            )
        Z = latent if self.space == "latent" else X
        meta = {"data_fingerprint": data_fingerprint(X), "space": self.space, "built_by": repr(self)}
        return build_knn_graph(Z, self.k, kernel=self.kernel, method=self.method, device=device, meta=meta)


class FitResult(NamedTuple):
    """Everything :func:`fit_gmvae` learned.

    Attributes
    ----------
    model : GMVAE
    gamma : ndarray of shape (n_samples, n_clusters)
    pi : ndarray of shape (n_samples, n_clusters) or None
    embedding : ndarray of shape (n_samples, latent_dim)
    graph : KNNGraph or None
    init : InitResult
    history : list of dict
    stage_times : dict
        ``{stage: {"seconds": float, "cached": bool}}``.
    seed : int
    """

    model: GMVAE
    gamma: np.ndarray
    pi: np.ndarray | None
    embedding: np.ndarray
    graph: KNNGraph | None
    init: InitResult
    history: list
    stage_times: dict
    seed: int


def stage_seeds(seed: int) -> dict[str, int]:
    """One independent 63-bit seed per random consumer in :data:`STAGES`."""
    children = np.random.SeedSequence(int(seed)).spawn(len(STAGES))
    return {name: int(c.generate_state(1, np.uint64)[0] >> np.uint64(1))
            for name, c in zip(STAGES, children)}


def _gen(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    return g


class _Stage:
    """Run-or-load one stage with fingerprint checks and timing (on rank 0 with ``dist``)."""

    def __init__(self, run_dir: Path | None, resume: bool, times: dict, verbose: bool,
                 dist: DistContext | None = None) -> None:
        self.run_dir, self.resume, self.times, self.verbose = run_dir, resume, times, verbose
        self.dist = dist

    def __call__(self, name: str, filename: str, fingerprint: str,
                 run: Callable[[], Any], save: Callable[[Path, Any, dict], None],
                 load: Callable[[Path], tuple[Any, dict]]) -> Any:
        if self.dist is None:
            return self._run_or_load(name, filename, fingerprint, run, save, load)

        def on_main() -> tuple[Any, dict]:
            value = self._run_or_load(name, filename, fingerprint, run, save, load)
            return value, self.times[name]

        value, self.times[name] = self.dist.run_on_main(on_main)
        return value

    def _run_or_load(self, name: str, filename: str, fingerprint: str,
                     run: Callable[[], Any], save: Callable[[Path, Any, dict], None],
                     load: Callable[[Path], tuple[Any, dict]]) -> Any:
        path = None if self.run_dir is None else self.run_dir / filename
        if path is not None and self.resume and path.exists():
            value, meta = load(path)
            if meta.get("fingerprint") != fingerprint:
                raise GraphclustError(
                    f"{path} was made by a run with other settings or data; resume with the "
                    "original settings, or start over (--force / resume=False)"
                )
            self.times[name] = {"seconds": float(meta.get("seconds", 0.0)), "cached": True}
            if self.verbose:
                print(f"[{name}] reused {path}")
            return value
        t0 = time.perf_counter()
        value = run()
        secs = time.perf_counter() - t0
        if path is not None:
            save(path, value, {"fingerprint": fingerprint, "seconds": secs, "stage": name})
        self.times[name] = {"seconds": secs, "cached": False}
        if self.verbose:
            print(f"[{name}] done in {secs:.1f} s")
        return value


def _array_hash(*arrays: np.ndarray) -> str:
    import hashlib

    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def _save_init(path: Path, init: InitResult, meta: dict) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **init._asdict(), meta_json=np.array(json.dumps(meta)))


def _load_init(path: Path) -> tuple[InitResult, dict]:
    with np.load(path, allow_pickle=False) as z:
        return (InitResult(z["labels"], z["means"], z["variances"], z["weights"]),
                json.loads(str(z["meta_json"])))


def fit_gmvae(
    X: np.ndarray,
    *,
    n_clusters: int,
    likelihood: Likelihood,
    latent_dim: int = 10,
    hidden: Sequence[int] = (500, 500, 2000),
    posterior: str = "head",
    init: Callable[[np.ndarray, int, int], InitResult],
    graph: KNNGraph | KNNGraphBuilder | Callable | None,
    pretrain: PretrainConfig,
    train: TrainConfig,
    seed: int,
    device: torch.device,
    y: np.ndarray | None = None,
    run_dir: str | Path | None = None,
    resume: bool = False,
    callbacks: Sequence[EpochCallback] = (),
    verbose: bool = False,
    dist: DistContext | None = None,
) -> FitResult:
    """Pretrain, initialise and train a GMVAE with (DGG) or without (VaDE) a graph.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features), float32, validated
    n_clusters : int
    likelihood : Likelihood
    latent_dim, hidden, posterior :
        Architecture (see :func:`~graphclust.models.mixture.build_gmvae`).
    init : callable
        ``(latent, n_clusters, random_state) -> InitResult``.
    graph : KNNGraph, builder or None
        A graph for ``X`` (checked by the caller), a callable ``(X, latent, device) ->
        KNNGraph`` run after AE pretraining, or ``None`` (no neighbours: VaDE).
    pretrain, train : PretrainConfig, TrainConfig
    seed : int
    device : torch.device
    y : ndarray, optional
        Labels for per-epoch metrics only.
    run_dir : path, optional
        Folder of the stage artifacts and checkpoints (must exist).
    resume : bool
        Reuse finished stages and the last checkpoint in ``run_dir``.
    callbacks : sequence of callables
        Per-epoch callbacks of the training stage (on every rank with ``dist``).
    verbose : bool
        Stage lines and progress bars (rank 0 only).
    dist : DistContext, optional
        Data-parallel training over ``dist.world_size`` processes; every rank calls this with
        the same arguments and ``device`` equal to ``dist.device``. Rank 0 runs the
        pretraining stages and writes every file; ``run_dir`` must exist for rank 0 before
        any rank calls.
    """
    pretrain.validate()
    train.validate()
    run_dir = None if run_dir is None else Path(run_dir)

    def check_run_dir() -> None:
        if run_dir is not None and not run_dir.is_dir():
            raise GraphclustError(f"run folder {run_dir} does not exist; create it first")

    if dist is None:
        check_run_dir()
    else:
        dist.run_on_main(check_run_dir)
    seeds = stage_seeds(seed)
    times: dict[str, dict] = {}
    main = dist is None or dist.is_main
    verbose = verbose and main
    stage = _Stage(run_dir, resume, times, verbose, dist)

    Xt = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32)).to(device)
    model = build_gmvae(
        X.shape[1], n_clusters, likelihood, latent_dim, hidden, posterior,
        generator=_gen(seeds["weights"]),
    ).to(device)

    def state_saver(path: Path, state: dict, meta: dict) -> None:
        save_weights(path, state, meta)

    def state_loader(path: Path) -> tuple[dict, dict]:
        return load_weights(path)

    def snapshot() -> dict:
        return {k: v.detach().clone() for k, v in model.state_dict().items()}

    # ---------------------------------------------------------------- 1. autoencoder
    base = {
        "data": data_fingerprint(X), "n_clusters": int(n_clusters), "likelihood": repr(likelihood),
        "latent_dim": int(latent_dim), "hidden": list(hidden), "posterior": str(posterior),
        "seed": int(seed),
    }
    ae_cfg = {k: v for k, v in asdict(pretrain).items()
              if k not in ("head_C", "logvar_ratio", "label_epochs", "label_weight")}
    fp_ae = config_fingerprint({**base, "pretrain": ae_cfg})

    def run_ae() -> dict:
        pretrain_autoencoder(
            model, Xt, pretrain.epochs, pretrain.batch_size, pretrain.lr, pretrain.noise,
            generator=_gen(seeds["pretrain_ae"]), verbose=verbose,
        )
        return snapshot()

    model.load_state_dict(stage("pretrain_ae", "ae.safetensors", fp_ae, run_ae, state_saver,
                                state_loader))
    latent = latent_means(model, Xt).cpu().numpy()

    # ---------------------------------------------------------------- 2. latent clustering
    fp_init = config_fingerprint({"ae": fp_ae, "init": repr(init)})
    init_result: InitResult = stage(
        "init", "init.npz", fp_init,
        lambda: run_init(init, latent, n_clusters, seeds["init"], data=X),
        _save_init, _load_init,
    )

    # ---------------------------------------------------------------- 3. graph
    built: KNNGraph | None
    if graph is None or isinstance(graph, KNNGraph):
        built = graph
        fp_graph = None if graph is None else _array_hash(graph.indices, graph.weights)
    else:
        fp_graph = config_fingerprint({"ae": fp_ae, "builder": repr(graph)})

        def save_graph(path: Path, g: KNNGraph, meta: dict) -> None:
            KNNGraph(g.indices, g.weights, g.distances, g.labels, {**g.meta, "stage": meta}).save(path)

        def load_graph(path: Path) -> tuple[KNNGraph, dict]:
            g = KNNGraph.load(path)
            return g, g.meta.get("stage", {})

        built = stage("graph", "graph.npz", fp_graph,
                      lambda: graph(X, latent, str(device)), save_graph, load_graph)
        built.check_matches(X)

    # ---------------------------------------------------------------- 4. prior + head
    head_cfg = {"init": fp_init, "head_C": pretrain.head_C, "logvar_ratio": pretrain.logvar_ratio}
    if pretrain.label_epochs:
        head_cfg["label_epochs"] = pretrain.label_epochs
    if pretrain.label_weight:
        head_cfg["label_weight"] = pretrain.label_weight
    fp_head = config_fingerprint(head_cfg)

    def run_head() -> dict:
        apply_init(model, init_result, pretrain.logvar_ratio)
        head_latent = latent
        if pretrain.label_epochs:
            fit_to_labels(model, Xt, init_result.labels, pretrain.label_epochs,
                          pretrain.batch_size, pretrain.lr,
                          generator=_gen(seeds["label_fit"]), verbose=verbose,
                          label_weight=pretrain.label_weight)
            # the prior and sigma~ were trained with the encoder: kept as they are
            head_latent = latent_means(model, Xt).cpu().numpy()
        if isinstance(model.posterior, ClassifierHead):
            pretrain_head(model.posterior, torch.from_numpy(head_latent).to(device),
                          init_result.labels, C=pretrain.head_C)
        return snapshot()

    model.load_state_dict(stage("head", "pretrained.safetensors", fp_head, run_head,
                                state_saver, state_loader))

    # ---------------------------------------------------------------- 5. DGG / VaDE
    fp_train = config_fingerprint({"head": fp_head, "graph": fp_graph, "train": train.resume_key()})
    t0 = time.perf_counter()
    result = train_dgg(
        model, Xt, built, train,
        batch_generator=_gen(seeds["batches"]),
        noise_generator=_gen(seeds["noise"], Xt.device),
        y=y,
        checkpoint=None if run_dir is None else run_dir / "checkpoint.pt",
        resume=resume, fingerprint=fp_train, callbacks=callbacks, verbose=verbose, dist=dist,
    )
    times["train"] = {
        "seconds": float(sum(r["time_s"] for r in result.history)),
        "cached": False,
        "wall_this_call": time.perf_counter() - t0,
        "epochs": len(result.history),
    }
    if run_dir is not None and main:
        save_weights(run_dir / "model.safetensors", model.state_dict(),
                     {"fingerprint": fp_train, "epochs": train.n_epochs})
    if dist is not None:
        dist.barrier()  # the run folder is complete before any rank returns
    embedding = latent_means(model, Xt).cpu().numpy()
    return FitResult(
        model=model,
        gamma=result.gamma.cpu().numpy(),
        pi=None if result.pi is None else result.pi.cpu().numpy(),
        embedding=embedding,
        graph=built,
        init=init_result,
        history=result.history,
        stage_times=times,
        seed=int(seed),
    )

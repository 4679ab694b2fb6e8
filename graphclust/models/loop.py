"""The training loop of the mixture models built on :class:`ClusterModel` (GMVAE of the slides,
k-DVAE, k-DAE, VCAMI), with or without a :class:`~graphclust.models.regularizer.GraphRegularizer`.

A model is any ``torch.nn.Module`` with the methods of :class:`ClusterModel`: it computes the
per-node :class:`~graphclust.nn.graph_reg.GraphTerms` of a batch once, and the loop either
averages the nodes' own objectives (no graph) or hands the terms to the regulariser's
message-passing layer. Like :func:`~graphclust.models.training.train_dgg`, every epoch ends
with one evaluation pass (``q(c | x)`` of all rows: labels, metrics, the next epoch's node
mixing weights) and an atomic checkpoint from which a resumed run continues bit for bit.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from graphclust.metrics import score_clustering
from graphclust.models.batching import NeighborBatches
from graphclust.models.checkpoint import (
    epoch_line,
    load_state,
    restore_epoch_state,
    save_epoch_state,
)
from graphclust.models.regularizer import GraphRegularizer
from graphclust.models.training import EpochCallback, predict_gamma
from graphclust.nn.graph_reg import GraphTerms
from graphclust.utils import GraphclustError, SubnormalGuard

__all__ = ["ClusterModel", "FitConfig", "LoopResult", "train_cluster_model"]


@runtime_checkable
class ClusterModel(Protocol):
    """What :func:`train_cluster_model` needs from a model (a ``torch.nn.Module``).

    Attributes
    ----------
    likelihood : Likelihood or None
        Scores reconstructions (``None`` for a model without a decoder).
    n_clusters : int
    """

    likelihood: Any
    n_clusters: int

    def batch_terms(
        self, x: Tensor, n_targets: int, generator: torch.Generator | None,
        neighbor_terms: bool,
    ) -> GraphTerms:
        """Per-node terms of a batch whose first ``n_targets`` rows are anchors.

        ``own`` is needed for the anchors only; ``neighbor_terms=False`` lets a model skip
        the reconstructions only the graph regulariser reads.
        """
        ...

    def log_gamma(self, x: Tensor) -> Tensor:
        """``ln q(c | x)`` for prediction (deterministic), shape (n, n_clusters)."""
        ...

    def embed(self, x: Tensor) -> Tensor:
        """Latent representation, shape (n, latent_dim)."""
        ...

    def log_prior(self) -> Tensor:
        """The model's mixing weights ``ln pi``, shape (n_clusters,)."""
        ...

    def start_epoch(self, epoch: int, n_epochs: int) -> None:
        """Called before epoch ``epoch`` (0-based) of ``n_epochs`` (e.g. annealing)."""
        ...


@dataclass(frozen=True)
class FitConfig:
    """Optimisation settings of :func:`train_cluster_model`.

    Attributes
    ----------
    n_epochs : int
    batch_size : int
        Anchors per batch.
    lr, weight_decay : float
        Adam.
    lr_step, lr_gamma :
        ``StepLR(step_size=lr_step, gamma=lr_gamma)``, stepped per epoch.
    max_grad_norm : float or None
        Clip the gradient norm (``None``: no clipping).
    eval_batch_size : int
    """

    n_epochs: int = 30
    batch_size: int = 256
    lr: float = 5e-4
    weight_decay: float = 0.0
    lr_step: int = 10
    lr_gamma: float = 0.9
    max_grad_norm: float | None = None
    eval_batch_size: int = 4096

    def validate(self) -> None:
        if self.n_epochs < 0:
            raise GraphclustError(f"n_epochs must be >= 0, got {self.n_epochs}")
        if self.batch_size < 1:
            raise GraphclustError(f"batch_size must be >= 1, got {self.batch_size}")
        if not self.lr > 0 or self.weight_decay < 0:
            raise GraphclustError(f"lr must be > 0 and weight_decay >= 0, got {self.lr}, "
                                  f"{self.weight_decay}")
        if self.lr_step < 1 or not self.lr_gamma > 0:
            raise GraphclustError("lr_step must be >= 1 and lr_gamma > 0")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise GraphclustError(f"max_grad_norm must be > 0 or None, got {self.max_grad_norm}")

    def resume_key(self) -> dict[str, Any]:
        """Everything but ``n_epochs`` (a run may be resumed to more epochs)."""
        d = asdict(self)
        d.pop("n_epochs")
        d.pop("eval_batch_size")
        return d


class LoopResult(NamedTuple):
    """Outcome of :func:`train_cluster_model`.

    Attributes
    ----------
    gamma : Tensor of shape (n_samples, n_clusters)
        ``q(c | x)`` of the final model (:meth:`ClusterModel.log_gamma`).
    pi : Tensor of shape (n_samples, n_clusters) or None
        Node mixing weights (with a regulariser in ``pi="graph"`` mode).
    history : list of dict
        One record per epoch.
    """

    gamma: Tensor
    pi: Tensor | None
    history: list



def train_cluster_model(
    model: torch.nn.Module,
    X: Tensor,
    config: FitConfig,
    regularizer: GraphRegularizer | None,
    batch_generator: torch.Generator,
    noise_generator: torch.Generator,
    y: np.ndarray | None = None,
    checkpoint: str | Path | None = None,
    resume: bool = False,
    fingerprint: str = "",
    callbacks: Sequence[EpochCallback] = (),
    verbose: bool = False,
) -> LoopResult:
    """Train a :class:`ClusterModel` on its own objective, optionally graph-regularised.

    Parameters
    ----------
    model : ClusterModel
        Pretrained; on ``X``'s device.
    X : Tensor of shape (n_samples, n_features)
    config : FitConfig
    regularizer : GraphRegularizer or None
        With a built graph of ``X`` (see :meth:`GraphRegularizer.with_graph`).
    batch_generator : torch.Generator
        CPU generator of the shuffle and neighbour sampling.
    noise_generator : torch.Generator
        Generator on ``X``'s device for the model's sampling (and augmentations).
    y : ndarray of shape (n_samples,), optional
        Only for logging ACC/NMI/ARI per epoch.
    checkpoint : path, optional
        Written (atomically) after every epoch.
    resume : bool
        Continue from ``checkpoint`` when it exists.
    fingerprint : str
        Identifies the run's settings; a checkpoint with another one is refused.
    callbacks : sequence of callables
        ``callback(record, history)`` after each epoch's checkpoint.
    verbose : bool

    Returns
    -------
    LoopResult
    """
    config.validate()
    if not isinstance(model, ClusterModel):
        raise GraphclustError(
            f"{type(model).__name__} lacks the ClusterModel methods (batch_terms, log_gamma, "
            "embed, log_prior, start_epoch)"
        )
    device = X.device
    opt = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    guard = SubnormalGuard(opt)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=config.lr_step, gamma=config.lr_gamma)
    layer = P = None
    if regularizer is None:
        batches = NeighborBatches(X, None, config.batch_size, generator=batch_generator)
    else:
        regularizer.validate()
        if regularizer.graph.n_nodes != X.shape[0]:
            raise GraphclustError(
                f"the regulariser's graph has {regularizer.graph.n_nodes} nodes but X has "
                f"{X.shape[0]} rows"
            )
        batches = regularizer.batches(X, config.batch_size, batch_generator)
        layer = regularizer.layer(model.likelihood)
        if regularizer.pi == "graph":
            P = regularizer.mixing_matrix(device)

    history: list[dict] = []
    start = 0
    pi: Tensor | None = None
    gamma: Tensor | None = None
    ckpt = None if checkpoint is None else Path(checkpoint)
    if resume and ckpt is not None and ckpt.exists():
        state = load_state(ckpt)
        start, pi, gamma, history = restore_epoch_state(
            state, ckpt, fingerprint, config.n_epochs, model, opt, sched,
            {"batch": batch_generator, "noise": noise_generator}, device)

    if gamma is None:
        gamma = predict_gamma(model, X, config.eval_batch_size)
    if P is not None and pi is None:
        pi = regularizer.node_mixing(gamma, P)

    model.train()
    for epoch in range(start + 1, config.n_epochs + 1):
        t0 = time.perf_counter()
        model.start_epoch(epoch - 1, config.n_epochs)
        total, seen = 0.0, 0
        bar = tqdm(batches, desc=f"epoch {epoch}/{config.n_epochs}", leave=False,
                   disable=not verbose)
        for batch in bar:
            B = batch.n_anchors
            terms = model.batch_terms(batch.x, B, noise_generator, layer is not None)
            if layer is None:
                obj = terms.own[:B]
            else:
                obj = regularizer.objective(
                    layer, batch.x, terms, model.log_prior(), pi, batch.node_ids,
                    batch.edge_index, batch.edge_weight, B,
                )
            loss = -obj.mean()
            if not torch.isfinite(loss):
                raise GraphclustError(
                    f"training diverged in epoch {epoch} (loss {loss.item()}); lower the learning "
                    "rate, or clip gradients (max_grad_norm)"
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if config.max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
            opt.step()
            guard.step()
            total += loss.item() * B
            seen += B
        sched.step()
        train_s = time.perf_counter() - t0
        prev = gamma.argmax(1)
        gamma = predict_gamma(model, X, config.eval_batch_size)
        if P is not None:
            pi = regularizer.node_mixing(gamma, P)
        labels = gamma.argmax(1)
        record: dict[str, Any] = {
            "epoch": epoch,
            "loss": total / max(seen, 1),
            "lr": float(opt.param_groups[0]["lr"]),
            "changed": float((labels != prev).float().mean()),
            "time_s": time.perf_counter() - t0,
            "train_time_s": train_s,
        }
        if y is not None:
            record.update(score_clustering(y, labels.cpu().numpy()).as_dict())
        history.append(record)
        if ckpt is not None:
            save_epoch_state(ckpt, fingerprint, epoch, model, opt, sched,
                             {"batch": batch_generator, "noise": noise_generator}, pi, gamma,
                             history)
        if verbose:
            tqdm.write(epoch_line(record, config.n_epochs))
        for cb in callbacks:
            cb(record, history)
    if not math.isfinite(float(gamma.sum())):
        raise GraphclustError("the model's cluster posteriors are not finite; training diverged")
    return LoopResult(gamma, pi, history)

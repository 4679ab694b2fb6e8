"""The DGG / VaDE training loop: subgraph batches -> node terms once -> DGGObjective.

One function, :func:`train_dgg`, trains a :class:`~graphclust.models.mixture.GMVAE`:

- with a graph: the DGG objective (design note sections 2-4) with node mixing weights
  ``pi`` from :class:`~graphclust.nn.dgg.MixingPropagation`, either once per epoch over the
  whole graph (one sparse matmul on ``gamma`` of the latent means; default) or per batch;
- without a graph: batches without edges and the global mixing vector, i.e. the VaDE ELBO.

Every epoch ends with one evaluation pass (``gamma`` from the latent means) that serves
the labels, the metrics and the next ``pi``, and an atomic checkpoint (model, optimizer,
scheduler, RNG states, ``pi``, history) from which a resumed run continues bit-for-bit.

Data-parallel training (``dist``, a :class:`~graphclust.distributed.DistContext`): every
rank holds ``X``, the graph and the model, and draws the same shuffle, neighbour samples and
reparameterisation noise as a one-process run; rank ``r`` of ``W`` trains on a contiguous
``1/W`` of each batch's anchors (``batch_size / W`` anchors per rank and step, so
``batch_size`` stays the global batch and the learning rate needs no rescaling) through
:class:`~torch.nn.parallel.DistributedDataParallel`. Each rank's loss is its anchors' summed
objective times ``W / batch_size``, so DDP's gradient average is exactly the one-process
batch mean, whatever the shard sizes: 1 and ``W`` processes follow the same trajectory up
to floating-point summation order. The evaluation pass is split by rows and gathered, so
``gamma`` and ``pi`` are identical on every rank; only rank 0 writes the checkpoint and
prints, and every rank can resume from it (the checkpoint is the same as a one-process
run's, so either kind of run resumes the other).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from tqdm.auto import tqdm

from graphclust.data.neighbors import SubgraphBatch
from graphclust.distributed import DistContext
from graphclust.graph.graph import KNNGraph
from graphclust.metrics import score_clustering
from graphclust.models.batching import NeighborBatches, subgraph_batch
from graphclust.models.checkpoint import (
    epoch_line,
    load_state,
    restore_epoch_state,
    save_epoch_state,
)
from graphclust.models.mixture import GMVAE
from graphclust.nn.dgg import PI_FLOOR, DGGObjective, MixingPropagation, mixing_matrix
from graphclust.utils import GraphclustError, SubnormalGuard

__all__ = ["EpochCallback", "TrainConfig", "TrainResult", "parse_grad_clip", "predict_gamma",
           "train_dgg"]

#: ``callback(record, history)`` after each epoch's checkpoint; raising stops training
#: (the checkpoint of that epoch is complete, so a resumed run continues from it).
EpochCallback = Callable[[dict, list], None]

PI_UPDATES = ("epoch", "batch")


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of the DGG / VaDE stage (design note section 6 defaults).

    Attributes
    ----------
    n_epochs : int
    batch_size : int
        Anchors per batch.
    lr, weight_decay : float
        Adam.
    lr_step, lr_gamma :
        ``StepLR(step_size=lr_step, gamma=lr_gamma)``, stepped per epoch.
    neighbor_sample : int or None
        Neighbours drawn per anchor with probability ``w_ij``; ``None``: all neighbours.
    n_neighbors : int or None
        Use only each node's first ``n_neighbors`` graph neighbours.
    self_weight : float
        Self-loop weight (1/2 in DGG).
    pi_update : {"epoch", "batch"}
    grad_clip : float or None
        Clip each step's gradient norm at ``grad_clip`` times the median gradient norm of
        the previous epoch (the first epoch is not clipped); ``None`` never clips. Each
        epoch's record holds ``grad_norm_median``, ``grad_norm_max`` and the share of steps
        ``clipped``. On 20 Newsgroups (20-d latent) the largest norm of epochs 2-21 was
        2.5-5.5x the previous median, and in epoch 22 a runaway (norms from ~22 to 4,895,
        then a collapse to chance-level clusters) started: 10x left epochs 1-21 untouched
        and cut 3 steps of epoch 22, which then trained on; 5x also clipped normal steps
        and changed the trajectory.
    eval_batch_size : int
    """

    n_epochs: int = 30
    batch_size: int = 256
    lr: float = 5e-4
    weight_decay: float = 1e-4
    lr_step: int = 10
    lr_gamma: float = 0.9
    neighbor_sample: int | None = 1
    n_neighbors: int | None = None
    self_weight: float = 0.5
    pi_update: str = "epoch"
    grad_clip: float | None = 10.0
    eval_batch_size: int = 4096

    def validate(self) -> None:
        if self.n_epochs < 0:
            raise GraphclustError(f"n_epochs must be >= 0, got {self.n_epochs}")
        if self.batch_size < 1:
            raise GraphclustError(f"batch_size must be >= 1, got {self.batch_size}")
        if not self.lr > 0:
            raise GraphclustError(f"lr must be > 0, got {self.lr}")
        if self.lr_step < 1 or not self.lr_gamma > 0:
            raise GraphclustError("lr_step must be >= 1 and lr_gamma > 0")
        if self.neighbor_sample is not None and self.neighbor_sample < 1:
            raise GraphclustError(
                f"neighbor_sample must be >= 1 or None (all neighbours), got {self.neighbor_sample}"
            )
        if not 0 < self.self_weight <= 1:
            raise GraphclustError(f"self_weight must lie in (0, 1], got {self.self_weight}")
        if self.grad_clip is not None and not self.grad_clip > 1:
            raise GraphclustError(
                f"grad_clip must be > 1 (a multiple of the previous epoch's median gradient "
                f"norm) or None, got {self.grad_clip}"
            )
        if self.pi_update not in PI_UPDATES:
            raise GraphclustError(
                f"unknown pi_update {self.pi_update!r}; expected one of {PI_UPDATES}"
            )

    def resume_key(self) -> dict[str, Any]:
        """Everything but ``n_epochs`` (a run may be resumed to more epochs)."""
        d = asdict(self)
        d.pop("n_epochs")
        d.pop("eval_batch_size")
        return d


def parse_grad_clip(text: str, option: str = "--grad-clip") -> float | None:
    """A command line's gradient clip: a number > 1, or ``'none'`` (no clipping)."""
    if str(text).strip().lower() == "none":
        return None
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 1:
        raise GraphclustError(
            f"{option} must be a number > 1 (a multiple of the previous epoch's median "
            f"gradient norm) or 'none', got {text!r}")
    return value


class TrainResult(NamedTuple):
    """Outcome of :func:`train_dgg`.

    Attributes
    ----------
    gamma : Tensor of shape (n_samples, n_clusters)
        ``q(c | x)`` from the latent means of the final model.
    pi : Tensor of shape (n_samples, n_clusters) or None
        Node mixing weights (None without a graph).
    history : list of dict
        One record per epoch.
    """

    gamma: torch.Tensor
    pi: torch.Tensor | None
    history: list


@torch.no_grad()
def predict_gamma(model: GMVAE, X: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    """``q(c | x)`` from the latent mean for every row, shape (n_samples, n_clusters)."""
    was = model.training
    model.eval()
    out = torch.cat(
        [model.log_gamma(X[s : s + batch_size]).exp() for s in range(0, X.shape[0], batch_size)]
    )
    model.train(was)
    return out


def _predict_gamma_shared(
    model: GMVAE, X: torch.Tensor, batch_size: int, dist: DistContext | None
) -> torch.Tensor:
    """:func:`predict_gamma` over all rows; with ``dist``, each rank does its row shard."""
    if dist is None:
        return predict_gamma(model, X, batch_size)
    local = predict_gamma(model, X[dist.shard(X.shape[0])], batch_size)
    return dist.all_gather_rows(local, X.shape[0])


def _has_unused_parameters(step: torch.nn.Module, X: torch.Tensor, pi: torch.Tensor | None) -> bool:
    """Whether some trainable parameter of ``step`` gets no gradient from the objective.

    Probes one two-anchor batch without neighbours and with zero noise (no generator is
    touched), then clears the gradients it made.
    """
    anchors = torch.arange(min(2, X.shape[0]))
    empty = anchors.new_empty((anchors.numel(), 0))
    batch = subgraph_batch(X, anchors, empty, empty.float())
    latent_dim = step.model.prior.latent_dim
    noise = torch.zeros((batch.x.shape[0], latent_dim), device=X.device, dtype=X.dtype)
    params = [p for p in step.parameters() if p.requires_grad]
    step(batch, pi, noise=noise).sum().backward()
    unused = any(p.grad is None for p in params)
    for p in params:
        p.grad = None
    return unused



class _GradClip:
    """Per-step gradient-norm clipping relative to the previous epoch's median norm.

    ``limit`` is ``factor x`` the median of the norms recorded in the previous epoch (from
    the history, so a resumed run clips exactly as an uninterrupted one); without one
    (first epoch, or ``factor`` None) the norm is only measured.
    """

    def __init__(self, params: list[torch.nn.Parameter], factor: float | None) -> None:
        self.params, self.factor = params, factor
        self.limit = float("inf")
        self.norms: list[float] = []

    def start_epoch(self, history: list[dict]) -> None:
        last = history[-1].get("grad_norm_median") if history else None
        self.limit = float("inf") if self.factor is None or last is None else self.factor * last
        self.norms = []

    def __call__(self) -> None:
        norm = torch.nn.utils.clip_grad_norm_(self.params, self.limit)
        self.norms.append(float(norm))

    def summary(self) -> dict[str, float]:
        if not self.norms:
            return {}
        norms = np.asarray(self.norms)
        return {"grad_norm_median": float(np.median(norms)), "grad_norm_max": float(norms.max()),
                "clipped": float((norms > self.limit).mean())}


class _BatchObjective(torch.nn.Module):
    """The DGG / VaDE objective of each anchor of one subgraph batch (what DDP wraps).

    Parameters
    ----------
    model : GMVAE
    objective : DGGObjective
    mixer : MixingPropagation
    use_graph : bool
        False: the global mixing vector (VaDE).
    pi_update : {"epoch", "batch"}
    """

    def __init__(self, model: GMVAE, objective: DGGObjective, mixer: MixingPropagation,
                 use_graph: bool, pi_update: str) -> None:
        super().__init__()
        self.model, self.objective, self.mixer = model, objective, mixer
        self.use_graph, self.pi_update = use_graph, pi_update

    def forward(self, batch: SubgraphBatch, pi: torch.Tensor | None,
                generator: torch.Generator | None = None,
                noise: torch.Tensor | None = None) -> torch.Tensor:
        """Objective per anchor, shape (batch.n_anchors,).

        ``pi`` (n_samples, n_clusters) is read in ``"epoch"`` mode; the noise comes from
        ``generator`` or, pre-drawn, from ``noise`` (n_nodes, latent_dim).
        """
        B = batch.n_anchors
        terms = self.model.node_terms(batch.x, sample=True, generator=generator, noise=noise)
        if not self.use_graph:
            log_pi = self.model.prior.log_weights().expand(batch.x.shape[0], -1)
        elif self.pi_update == "epoch":
            log_pi = pi[batch.node_ids].clamp_min(PI_FLOOR).log()
        else:
            pi_b = self.mixer(terms.gamma, batch.edge_index, batch.edge_weight, n_targets=B)
            log_pi = torch.zeros_like(terms.gamma)
            log_pi[:B] = pi_b.clamp_min(PI_FLOOR).log()
        return self.objective(
            batch.x, terms.recon, terms.latent_term, terms.gamma, log_pi,
            batch.edge_index, batch.edge_weight, n_targets=B,
        )


def train_dgg(
    model: GMVAE,
    X: torch.Tensor,
    graph: KNNGraph | None,
    config: TrainConfig,
    batch_generator: torch.Generator,
    noise_generator: torch.Generator,
    y: np.ndarray | None = None,
    checkpoint: str | Path | None = None,
    resume: bool = False,
    fingerprint: str = "",
    callbacks: Sequence[EpochCallback] = (),
    verbose: bool = False,
    dist: DistContext | None = None,
) -> TrainResult:
    """Train ``model`` with the DGG objective over ``graph`` (or the VaDE ELBO without one).

    Parameters
    ----------
    model : GMVAE
        Pretrained; on ``X``'s device.
    X : Tensor of shape (n_samples, n_features)
    graph : KNNGraph or None
    config : TrainConfig
    batch_generator : torch.Generator
        CPU generator of the shuffle and neighbour sampling.
    noise_generator : torch.Generator
        Generator (on ``X``'s device) of the reparameterisation noise.
    y : ndarray of shape (n_samples,), optional
        Only for logging ACC/NMI/ARI per epoch.
    checkpoint : path, optional
        Written (atomically) after every epoch.
    resume : bool
        Continue from ``checkpoint`` when it exists.
    fingerprint : str
        Identifies the run's settings; a checkpoint with another one is refused.
    callbacks : sequence of callables
        ``callback(record, history)`` after each epoch's checkpoint; with ``dist`` they run
        on every rank with the same record (guard side effects with ``dist.is_main``; an
        exception should be raised on every rank).
    verbose : bool
        Progress bars and one line per epoch (rank 0 only).
    dist : DistContext, optional
        Train data-parallel over ``dist.world_size`` processes (module docstring); every
        rank calls this with the same arguments (``X`` on ``dist.device``).
    """
    config.validate()
    device = X.device
    main = dist is None or dist.is_main
    verbose = verbose and main
    objective = DGGObjective(model.likelihood, config.self_weight)
    mixer = MixingPropagation(config.self_weight)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    guard = SubnormalGuard(opt)
    clip = _GradClip([p for p in model.parameters() if p.requires_grad], config.grad_clip)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=config.lr_step, gamma=config.lr_gamma)
    batches = NeighborBatches(
        X, graph, config.batch_size,
        sample=config.neighbor_sample, n_neighbors=config.n_neighbors, generator=batch_generator,
    )
    P = None
    if graph is not None:
        g = graph if config.n_neighbors is None else graph.topk(config.n_neighbors)
        P = mixing_matrix(g, config.self_weight, device=device)

    history: list[dict] = []
    start = 0
    pi: torch.Tensor | None = None
    gamma: torch.Tensor | None = None
    ckpt = None if checkpoint is None else Path(checkpoint)
    state = None
    if resume and ckpt is not None:
        def read() -> dict | None:
            return load_state(ckpt) if ckpt.exists() else None

        # rank 0 reads the file and hands it to every rank (no shared file system needed)
        state = read() if dist is None else dist.run_on_main(read)
    if state is not None:
        start, pi, gamma, history = restore_epoch_state(
            state, ckpt, fingerprint, config.n_epochs, model, opt, sched,
            {"batch": batch_generator, "noise": noise_generator}, device)

    if gamma is None:
        gamma = _predict_gamma_shared(model, X, config.eval_batch_size, dist)
    if P is not None and pi is None:
        pi = mixer(gamma, P)

    step = _BatchObjective(model, objective, mixer, graph is not None, config.pi_update)
    if dist is not None:
        from torch.nn.parallel import DistributedDataParallel

        # parameters without a gradient (e.g. the global mixing logits with the classifier
        # head) must be declared: they then keep grad None, and Adam skips them, as in one
        # process
        step = DistributedDataParallel(
            step, device_ids=[device] if device.type == "cuda" else None,
            find_unused_parameters=_has_unused_parameters(step, X, pi),
        )
    latent_dim = model.prior.latent_dim

    model.train()
    for epoch in range(start + 1, config.n_epochs + 1):
        t0 = time.perf_counter()
        total, seen = 0.0, 0
        clip.start_epoch(history)
        if dist is None:
            for batch in tqdm(batches, desc=f"epoch {epoch}/{config.n_epochs}", leave=False,
                              disable=not verbose):
                B = batch.n_anchors
                loss = -step(batch, pi, generator=noise_generator).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                clip()
                opt.step()
                guard.step()
                total += loss.item() * B
                seen += B
        else:
            shards = batches.shards(dist.rank, dist.world_size)
            for part in tqdm(shards, total=len(batches), desc=f"epoch {epoch}/{config.n_epochs}",
                             leave=False, disable=not verbose):
                # the whole batch's noise, as one process draws it; this rank's rows of it
                eps = torch.randn((part.n_global_nodes, latent_dim), generator=noise_generator,
                                  device=device, dtype=X.dtype)
                obj = step(part.batch, pi, noise=eps[part.global_rows.to(device)])
                # DDP averages gradients over ranks: W * sum / B is the batch mean overall
                loss = -obj.sum() * (dist.world_size / part.n_global_anchors)
                opt.zero_grad(set_to_none=True)
                loss.backward()  # DDP has averaged the gradients: every rank clips alike
                clip()
                opt.step()
                guard.step()
                total += -float(obj.detach().sum())
            sums = dist.all_reduce_metrics({"total": total})
            total, seen = sums["total"], X.shape[0]
        sched.step()
        train_s = time.perf_counter() - t0
        prev = gamma.argmax(1)
        gamma = _predict_gamma_shared(model, X, config.eval_batch_size, dist)
        if P is not None:  # used by the next epoch ("epoch" mode) and reported either way
            pi = mixer(gamma, P)
        labels = gamma.argmax(1)
        record: dict[str, Any] = {
            "epoch": epoch,
            "loss": total / max(seen, 1),
            "lr": float(opt.param_groups[0]["lr"]),
            "changed": float((labels != prev).float().mean()),
            "time_s": time.perf_counter() - t0,
            "train_time_s": train_s,
            **clip.summary(),
        }
        if y is not None:
            record.update(score_clustering(y, labels.cpu().numpy()).as_dict())
        history.append(record)
        if ckpt is not None and main:
            save_epoch_state(ckpt, fingerprint, epoch, model, opt, sched,
                             {"batch": batch_generator, "noise": noise_generator}, pi, gamma,
                             history)
        if verbose:
            tqdm.write(epoch_line(record, config.n_epochs))
        for cb in callbacks:
            cb(record, history)
    return TrainResult(gamma, pi, history)

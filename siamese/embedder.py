"""The sklearn-style front door of the Siamese stage: :class:`SiameseEmbedder`."""

from __future__ import annotations

import copy
import json
import numbers
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted
from tqdm.auto import tqdm

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

from .losses import ContrastiveLoss
from .networks import MLPEmbedding
from .pairs import KNNPairMiner, PairBatch

__all__ = ["SiameseEmbedder"]

_FORMAT = "graphclust.siamese.SiameseEmbedder"
_FORMAT_VERSION = 1
_META_KEY = "graphclust"
_TRANSFORM_ROWS = 4096  # rows per forward pass in transform()


def _check_number(name: str, value: Any, *, integer: bool = False, low: float = 0.0,
                  strict: bool = True, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    kind = numbers.Integral if integer else numbers.Real
    ok = not isinstance(value, bool) and isinstance(value, kind) and np.isfinite(value)
    ok = ok and (value > low if strict else value >= low)
    if not ok:
        what = "an integer" if integer else "a number"
        bound = f"> {low:g}" if strict else f">= {low:g}"
        none = " or None" if allow_none else ""
        raise GraphclustError(f"{name} must be {what} {bound}{none}, got {value!r}")


class SiameseEmbedder(TransformerMixin, BaseEstimator):
    """Learn an embedding where input-space neighbours are close (DGG's Siamese stage).

    Pairs from a miner (default :class:`~siamese.KNNPairMiner`: kNN positives,
    random negatives) train a shared :class:`~siamese.MLPEmbedding` with the
    :class:`~siamese.ContrastiveLoss`; Adam with weight decay and a StepLR
    schedule, as in DGG. A kNN graph is then typically built on ``transform(X)``.

    Parameters
    ----------
    hidden : sequence of int, default (500, 500, 2000)
        Hidden widths of the MLP (DGG: D-500-500-2000-10).
    out_dim : int, default 10
        Embedding dimension.
    margin : float, default 3.0
        Contrastive margin.
    miner : PairMiner, optional
        Object with ``prepare(X)`` and ``sample(n_pairs, generator) -> PairBatch``;
        it is copied, never modified. Default ``KNNPairMiner(n_neighbors=10, neg_per_pos=1)``.
    n_epochs : int, default 10
        Passes over ``pairs_per_epoch`` pairs (DGG trains longer; 10 suits a laptop CPU).
    pairs_per_epoch : int, optional
        Pairs drawn per epoch; default: the miner's natural epoch (one positive per
        point plus its negatives, i.e. ``2 * n_samples`` for the default miner).
    batch_size : int, default 256
        Pairs per optimiser step.
    lr, weight_decay : float, default 5e-4, 1e-4
        Adam settings.
    lr_step, lr_gamma : int, float, default 70, 0.1
        Multiply the learning rate by ``lr_gamma`` every ``lr_step`` epochs.
    activation : str, default "relu"
        Hidden activation (see :data:`siamese.networks.ACTIVATIONS`).
    batch_norm : bool, default False
        Batch normalisation after each hidden layer.
    device : str, default "auto"
        Torch device for training and transform (CUDA when available).
    random_state : int, numpy Generator or None
        Seeds the weight initialisation and the pair sampling (local generators only).
    verbose : bool, default True
        Show a progress bar over epochs with the current loss.
    augment : callable, optional
        ``augment(x, generator) -> x'``: a random transform applied afresh to both arms of
        every training pair (e.g. :class:`graphclust.data.augment.ImageAugment`, small
        shifts and rotations of images), so that the embedding also becomes invariant to it.
        It must return a tensor of ``x``'s shape; its randomness comes only from the given
        generator (seeded from ``random_state``). ``transform`` never augments. Default: none.
    distributed : DistContext, optional
        Train data-parallel in every process of a torchrun job (from
        :func:`graphclust.distributed.init_distributed`; its device replaces ``device``).
        Every rank mines the same pairs (same seed) and trains on a contiguous
        ``1/world_size`` of each step's ``batch_size`` pairs through
        ``DistributedDataParallel``, with its loss scaled so that the averaged gradient is
        the whole batch's mean: 1 and N processes follow the same trajectory up to
        floating-point summation order (with ``batch_norm``, statistics are per rank on
        CPU and synchronised on CUDA). The miner is prepared on every rank and must be
        deterministic. Only rank 0 shows progress.

    Attributes
    ----------
    network_ : MLPEmbedding
        The trained network (in eval mode).
    miner_ : PairMiner
        The prepared copy of the miner (e.g. ``miner_.neighbors_``).
    history_ : list of float
        Mean training loss per epoch.
    n_features_in_ : int
        Number of input features seen in :meth:`fit`.

    Examples
    --------
    >>> emb = SiameseEmbedder(n_epochs=5, random_state=0).fit(X)   # doctest: +SKIP
    >>> Z = emb.transform(X)                                       # (n_samples, 10) float32
    """

    def __init__(
        self,
        hidden: Sequence[int] = (500, 500, 2000),
        out_dim: int = 10,
        margin: float = 3.0,
        miner: Any = None,
        n_epochs: int = 10,
        pairs_per_epoch: int | None = None,
        batch_size: int = 256,
        lr: float = 5e-4,
        weight_decay: float = 1e-4,
        lr_step: int = 70,
        lr_gamma: float = 0.1,
        activation: str = "relu",
        batch_norm: bool = False,
        device: str = "auto",
        random_state: int | np.random.Generator | None = None,
        verbose: bool = True,
        distributed: Any = None,
        augment: Any = None,
    ) -> None:
        self.hidden = hidden
        self.out_dim = out_dim
        self.margin = margin
        self.miner = miner
        self.n_epochs = n_epochs
        self.pairs_per_epoch = pairs_per_epoch
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.lr_step = lr_step
        self.lr_gamma = lr_gamma
        self.activation = activation
        self.batch_norm = batch_norm
        self.device = device
        self.random_state = random_state
        self.verbose = verbose
        self.distributed = distributed
        self.augment = augment

    # ------------------------------------------------------------------ fitting
    def _validate_params(self) -> None:
        _check_number("margin", self.margin)
        _check_number("n_epochs", self.n_epochs, integer=True)
        _check_number("pairs_per_epoch", self.pairs_per_epoch, integer=True, allow_none=True)
        _check_number("batch_size", self.batch_size, integer=True)
        _check_number("lr", self.lr)
        _check_number("weight_decay", self.weight_decay, strict=False)
        _check_number("lr_step", self.lr_step, integer=True)
        _check_number("lr_gamma", self.lr_gamma)
        if self.augment is not None and not callable(self.augment):
            raise GraphclustError(
                "augment must be a callable (x, generator) -> x' such as "
                f"graphclust.data.augment.ImageAugment, got {type(self.augment).__name__}"
            )
        if self.miner is not None and not (
            callable(getattr(self.miner, "prepare", None)) and callable(getattr(self.miner, "sample", None))
        ):
            raise GraphclustError(
                f"miner must have prepare(X) and sample(n_pairs, generator) methods (see "
                f"siamese.pairs), got {type(self.miner).__name__}"
            )

    def fit(self, X: Any, y: Any = None) -> SiameseEmbedder:
        """Train the network on pairs mined from ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data (kept on ``device`` for the whole fit; pairs index into it).
        y : ignored
            Present for API compatibility; use ``LabelPairMiner`` for labels.

        Returns
        -------
        self
        """
        from graphclust.distributed import DistContext

        self._validate_params()
        dist = self.distributed
        if dist is not None and not isinstance(dist, DistContext):
            raise GraphclustError(
                "distributed must be a DistContext from graphclust.distributed.init_distributed "
                f"(or None), got {type(dist).__name__}"
            )
        X = check_features(X)
        dev = resolve_device(self.device) if dist is None else dist.device
        rng = check_random_state(self.random_state)
        init_gen, pair_gen = torch_generator(rng), torch_generator(rng)
        # drawn last, and only when used, so runs without augmentation are unchanged; on the
        # training device, where the augmentation draws its random numbers
        arms = _Arms(self.augment,
                     torch_generator(rng, dev) if self.augment is not None else None)

        network = MLPEmbedding(
            X.shape[1], self.hidden, self.out_dim, self.activation, self.batch_norm,
            generator=init_gen,
        ).to(dev)
        if self.miner is None:
            miner = KNNPairMiner(device=self.device if dist is None else str(dev))
        else:
            miner = copy.deepcopy(self.miner)
        miner.prepare(X)

        loss_fn = ContrastiveLoss(self.margin)
        optimizer = torch.optim.Adam(network.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=self.lr_step, gamma=self.lr_gamma)
        Xt = torch.from_numpy(X).to(dev)
        trained: torch.nn.Module = network
        if dist is not None:
            from torch.nn.parallel import DistributedDataParallel

            if self.batch_norm and dev.type == "cuda":
                trained = torch.nn.SyncBatchNorm.convert_sync_batchnorm(network)
            trained = DistributedDataParallel(
                trained, device_ids=[dev] if dev.type == "cuda" else None)

        history: list[float] = []
        verbose = bool(self.verbose) and (dist is None or dist.is_main)
        bar = tqdm(range(int(self.n_epochs)), desc="siamese", unit="epoch", disable=not verbose)
        for epoch in bar:
            pairs = miner.sample(self.pairs_per_epoch, pair_gen)
            if not isinstance(pairs, PairBatch):
                pairs = PairBatch(*pairs)
            order = torch.randperm(pairs.n_pairs, generator=pair_gen)
            pairs = pairs.select(order).to(dev)
            if dist is None:
                loss = _train_epoch(network, loss_fn, optimizer, Xt, pairs, int(self.batch_size),
                                    arms)
            else:
                loss = _train_epoch_sharded(trained, loss_fn, optimizer, Xt, pairs,
                                            int(self.batch_size), dist, arms)
            if not np.isfinite(loss):
                raise GraphclustError(
                    f"the contrastive loss became {loss} in epoch {epoch + 1}; lower lr "
                    f"(now {self.lr:g}) or scale X (e.g. to [0, 1])"
                )
            scheduler.step()
            history.append(loss)
            bar.set_postfix(loss=f"{loss:.4f}")

        network.eval()
        self.network_ = network
        self.miner_ = miner
        self.history_ = history
        self.n_features_in_ = int(X.shape[1])
        return self

    # ------------------------------------------------------------------ inference
    def transform(self, X: Any) -> np.ndarray:
        """Embed ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        numpy.ndarray of shape (n_samples, out_dim), float32
        """
        check_is_fitted(self, "network_")
        X = check_features(X, min_samples=1)
        if X.shape[1] != self.n_features_in_:
            raise GraphclustError(
                f"X has {X.shape[1]} features but this SiameseEmbedder was fitted on "
                f"{self.n_features_in_}; pass data with the same columns as in fit"
            )
        net = self.network_
        dev = next(net.parameters()).device
        out = np.empty((X.shape[0], net.out_dim), dtype=np.float32)
        was_training = net.training
        net.eval()
        try:
            with torch.no_grad():
                for start in range(0, X.shape[0], _TRANSFORM_ROWS):
                    rows = torch.from_numpy(X[start:start + _TRANSFORM_ROWS]).to(dev)
                    out[start:start + rows.shape[0]] = net(rows).float().cpu().numpy()
        finally:
            net.train(was_training)
        return out

    def fit_transform(self, X: Any, y: Any = None) -> np.ndarray:
        """``fit(X).transform(X)``."""
        return self.fit(X, y).transform(X)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path, overwrite: bool = True) -> Path:
        """Write the fitted network to a ``.safetensors`` file (no pickle).

        The weights are the tensors; the hyperparameters, ``n_features_in_`` and
        ``history_`` are JSON in the file's metadata. The file is written
        atomically (a temporary file renamed on success).

        Parameters
        ----------
        path : path-like
            Destination, conventionally ``*.safetensors``.
        overwrite : bool, default True
            When False, refuse to replace an existing file.

        Returns
        -------
        pathlib.Path
        """
        from safetensors.torch import save_file

        check_is_fitted(self, "network_")
        path = prepare_output(path, force=overwrite)
        if not isinstance(self.activation, str):
            raise GraphclustError(
                "only networks with a named activation (e.g. 'relu') can be saved; "
                f"got {self.activation!r}"
            )
        params = self.get_params(deep=False)
        params["hidden"] = [int(h) for h in params["hidden"]]
        params["device"] = str(params["device"])
        params.pop("miner")
        params.pop("distributed", None)
        params.pop("augment", None)  # a training-time callable: described below, not restored
        rs = params["random_state"]
        params["random_state"] = int(rs) if isinstance(rs, (int, np.integer)) else None
        doc = {
            "format": _FORMAT,
            "format_version": _FORMAT_VERSION,
            "params": params,
            "miner": repr(self.miner_),
            "augment": None if self.augment is None else repr(self.augment),
            "n_features_in": self.n_features_in_,
            "history": [float(v) for v in self.history_],
        }
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.network_.state_dict().items()}
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata={_META_KEY: json.dumps(doc)})
        return path

    @classmethod
    def load(cls, path: str | Path, device: str = "auto") -> SiameseEmbedder:
        """Restore an embedder written by :meth:`save`.

        Parameters
        ----------
        path : path-like
            A file written by :meth:`save`.
        device : str, default "auto"
            Device for the restored network.

        Returns
        -------
        SiameseEmbedder
            Fitted; ``transform`` gives the same embeddings as before saving.
            ``miner`` and ``augment`` are None and ``miner_`` is not set (the saved file
            describes them in its metadata only; pass them to refit).

        Raises
        ------
        GraphclustError
            When the file is missing, is not a safetensors file, or was not
            written by :meth:`save`.
        """
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise GraphclustError(f"cannot load {path}: no such file")
        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                metadata = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as exc:  # the parser raises several types for damaged files
            raise GraphclustError(
                f"cannot load {path}: not a readable safetensors file ({exc}); was it written by "
                "SiameseEmbedder.save and copied completely?"
            ) from exc
        try:
            doc = json.loads(metadata[_META_KEY])
            if doc.get("format") != _FORMAT:
                raise KeyError("format")
            version = int(doc["format_version"])
            params = dict(doc["params"])
            n_features = int(doc["n_features_in"])
            history = [float(v) for v in doc.get("history", [])]
        except (KeyError, TypeError, ValueError) as exc:
            raise GraphclustError(
                f"cannot load {path}: it is a safetensors file but not one written by "
                "SiameseEmbedder.save (missing or malformed graphclust metadata)"
            ) from exc
        if version > _FORMAT_VERSION:
            raise GraphclustError(
                f"cannot load {path}: it uses format version {version}, this graphclust reads up "
                f"to {_FORMAT_VERSION}; upgrade graphclust"
            )

        known = cls().get_params(deep=False)
        params = {k: v for k, v in params.items() if k in known and k not in ("miner", "distributed", "augment")}
        params["hidden"] = tuple(params.get("hidden", known["hidden"]))
        params["device"] = device
        est = cls(**params)
        dev = resolve_device(device)
        try:
            net = MLPEmbedding(
                n_features, est.hidden, est.out_dim, est.activation, est.batch_norm,
                generator=torch.Generator(),  # overwritten below; keeps the global RNG untouched
            )
            net.load_state_dict(tensors, strict=True)
        except (RuntimeError, GraphclustError) as exc:
            raise GraphclustError(
                f"cannot load {path}: its weights do not match the saved network description ({exc})"
            ) from exc
        est.network_ = net.to(dev).eval()
        est.history_ = history
        est.n_features_in_ = n_features
        return est


class _Arms:
    """The input rows of a batch of pairs, left arm then right, augmented when asked."""

    def __init__(self, augment: Any = None, generator: torch.Generator | None = None) -> None:
        self.augment, self.generator = augment, generator

    def __call__(self, X: torch.Tensor, batch: PairBatch) -> torch.Tensor:
        rows = X[torch.cat([batch.left, batch.right])]
        if self.augment is None:
            return rows
        out = self.augment(rows, self.generator)
        if not isinstance(out, torch.Tensor) or out.shape != rows.shape:
            raise GraphclustError(
                f"augment returned {type(out).__name__} of shape {tuple(getattr(out, 'shape', ()))} "
                f"for a batch of shape {tuple(rows.shape)}; it must return a tensor of the "
                "input's shape"
            )
        return out.to(rows.dtype)


def _train_epoch(
    network: torch.nn.Module,
    loss_fn: ContrastiveLoss,
    optimizer: torch.optim.Optimizer,
    X: torch.Tensor,
    pairs: PairBatch,
    batch_size: int,
    arms: _Arms | None = None,
) -> float:
    """One pass over ``pairs`` (already shuffled, on X's device); returns the mean loss."""
    arms = arms or _Arms()
    network.train()
    guard = SubnormalGuard(optimizer)
    total = torch.zeros((), dtype=torch.float64, device=X.device)
    for start in range(0, pairs.n_pairs, batch_size):
        batch = pairs.select(slice(start, start + batch_size))
        b = batch.n_pairs
        # both arms in one forward pass (shared weights, shared batch-norm statistics)
        emb = network(arms(X, batch))
        loss = loss_fn(emb[:b], emb[b:], batch.target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        guard.step()
        total += loss.detach().double() * b
    guard.flush()
    return float(total) / pairs.n_pairs


def _train_epoch_sharded(
    model: torch.nn.Module,
    loss_fn: ContrastiveLoss,
    optimizer: torch.optim.Optimizer,
    X: torch.Tensor,
    pairs: PairBatch,
    batch_size: int,
    dist: Any,
    arms: _Arms | None = None,
) -> float:
    """:func:`_train_epoch` with each step's pairs split over ranks (``model`` is DDP).

    Rank ``r`` of ``W`` takes the contiguous pairs ``[b r / W, b (r+1) / W)`` of every step's
    ``b`` pairs; its mean loss is weighted by ``W * b_r / b`` so that DDP's gradient average
    is the mean over all ``b`` pairs. Returns the mean loss over all pairs (same on every rank).
    With augmentation every rank augments the whole step (same generator on every rank), then
    keeps its share, so the trajectory matches one process.
    """
    arms = arms or _Arms()
    model.train()
    guard = SubnormalGuard(optimizer)
    W = dist.world_size
    batch_norm = any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
    total = torch.zeros((), dtype=torch.float64, device=X.device)
    for start in range(0, pairs.n_pairs, batch_size):
        batch = pairs.select(slice(start, start + batch_size))
        b = batch.n_pairs
        share = dist.shard(b)
        part = batch.select(share)
        br = part.n_pairs
        if arms.augment is not None:
            rows = arms(X, batch)
            rows = torch.cat([rows[:b][share], rows[b:][share]])
        else:
            rows = arms(X, part)
        if br > 0:
            emb = model(rows)
            loss = loss_fn(emb[:br], emb[br:], part.target)
            total += loss.detach().double() * br
            loss = loss * (W * br / b)
        else:
            # fewer pairs than ranks in this step: a forward pass (DDP needs one per step)
            # that contributes zero gradients; batch norm needs at least two rows
            rows = X[:2] if batch_norm else X[:0]
            loss = model(rows).sum() * 0.0
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        guard.step()
    guard.flush()
    return dist.all_reduce_metrics({"total": float(total)})["total"] / pairs.n_pairs

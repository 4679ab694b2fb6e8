"""Pairs for the contrastive loss, and the miners that sample them.

The one pair format is :class:`PairBatch`: three aligned 1-D tensors holding
*indices* into ``X`` (never copied feature rows) and a 0/1 target.

A miner is a small strategy object with two methods::

    miner.prepare(X)                          # once, e.g. builds the kNN table
    pairs = miner.sample(n_pairs, generator)  # every epoch -> PairBatch

``sample(None, generator)`` gives the miner's natural epoch: one positive pair per
anchor point plus ``neg_per_pos`` negatives for each. Sampling is deterministic
given the generator. Any object with these two methods can be passed to
:class:`siamese.SiameseEmbedder` as ``miner``.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol, runtime_checkable

import numpy as np
import torch

from graphclust.utils import (
    GraphclustError,
    check_features,
    check_labels,
    torch_generator,
)

__all__ = ["KNNPairMiner", "LabelPairMiner", "PairBatch", "PairMiner"]


class PairBatch(NamedTuple):
    """A batch of index pairs with similarity targets.

    Attributes
    ----------
    left : torch.LongTensor, shape (n_pairs,)
        Row indices into ``X`` of the first element of each pair.
    right : torch.LongTensor, shape (n_pairs,)
        Row indices into ``X`` of the second element (never equal to ``left``).
    target : torch.FloatTensor, shape (n_pairs,)
        ``1.0`` for a similar pair, ``0.0`` for a dissimilar pair.
    """

    left: torch.Tensor
    right: torch.Tensor
    target: torch.Tensor

    @property
    def n_pairs(self) -> int:
        """Number of pairs in the batch."""
        return int(self.left.shape[0])

    def select(self, index: torch.Tensor | slice) -> PairBatch:
        """The pairs at ``index`` (a slice, an index tensor or a boolean mask)."""
        return PairBatch(self.left[index], self.right[index], self.target[index])

    def to(self, device: torch.device | str) -> PairBatch:
        """The same pairs on ``device``."""
        return PairBatch(self.left.to(device), self.right.to(device), self.target.to(device))


@runtime_checkable
class PairMiner(Protocol):
    """What :class:`siamese.SiameseEmbedder` needs from a miner."""

    def prepare(self, X: np.ndarray) -> PairMiner:
        """Precompute whatever sampling needs from ``X`` of shape ``(n_samples, n_features)``."""
        ...

    def sample(self, n_pairs: int | None, generator: torch.Generator) -> PairBatch:
        """Draw ``n_pairs`` pairs (``None``: the miner's natural epoch size)."""
        ...


# --------------------------------------------------------------------------- helpers
def _as_generator(generator: torch.Generator | int | None) -> torch.Generator:
    if isinstance(generator, torch.Generator):
        if generator.device.type != "cpu":
            raise GraphclustError("miners sample on the CPU; pass a CPU torch.Generator")
        return generator
    return torch_generator(generator)


def _cycled(candidates: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` draws from ``candidates`` as back-to-back random permutations.

    Every candidate appears ``n // m`` or ``n // m + 1`` times (``m`` candidates),
    so a natural epoch uses each anchor exactly once.
    """
    m = candidates.shape[0]
    if m == 0 and n > 0:
        raise GraphclustError("the miner has no candidate anchors to draw pairs from")
    reps = -(-n // m) if n > 0 else 0
    if reps == 0:
        return candidates[:0]
    order = torch.cat([torch.randperm(m, generator=generator) for _ in range(reps)])[:n]
    return candidates[order]


def _uniform_below(high: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One integer uniform in ``[0, high[i])`` per entry of ``high`` (all ``high >= 1``)."""
    u = torch.rand(high.shape, generator=generator, dtype=torch.float64)
    return torch.minimum((u * high).long(), high - 1)


def _check_neg_per_pos(neg_per_pos: Any) -> float:
    if isinstance(neg_per_pos, bool) or not isinstance(neg_per_pos, numbers.Real):
        raise GraphclustError(f"neg_per_pos must be a number >= 0, got {neg_per_pos!r}")
    if not np.isfinite(neg_per_pos) or neg_per_pos < 0:
        raise GraphclustError(f"neg_per_pos must be a finite number >= 0, got {neg_per_pos}")
    return float(neg_per_pos)


class _BaseMiner:
    """Shared sampling skeleton: split into positives and negatives, then concatenate.

    Subclasses set ``n_anchors_`` in :meth:`prepare` and implement
    ``_positives(n, generator)`` and ``_negatives(n, generator)``, each returning
    ``(left, right)`` index tensors of length ``n``.
    """

    neg_per_pos: float

    def _check_prepared(self) -> None:
        if getattr(self, "n_anchors_", None) is None:
            raise GraphclustError(
                f"{type(self).__name__} has not been prepared; call miner.prepare(X) before "
                "miner.sample(...)"
            )

    def n_pairs_per_epoch(self) -> int:
        """Natural epoch size: one positive per anchor plus ``neg_per_pos`` negatives each."""
        self._check_prepared()
        return int(round(self.n_anchors_ * (1.0 + self.neg_per_pos)))

    def sample(self, n_pairs: int | None = None, generator: torch.Generator | int | None = None) -> PairBatch:
        """Draw pairs: positives first, then negatives.

        Parameters
        ----------
        n_pairs : int or None
            Number of pairs; a fraction ``1 / (1 + neg_per_pos)`` of them are
            positives. ``None`` gives :meth:`n_pairs_per_epoch`.
        generator : torch.Generator, int or None
            CPU generator (or a seed) for all random choices.

        Returns
        -------
        PairBatch
            ``n_pairs`` pairs, positives first (callers shuffle if they need to).
        """
        self._check_prepared()
        gen = _as_generator(generator)
        if n_pairs is None:
            n_pairs = self.n_pairs_per_epoch()
        if isinstance(n_pairs, bool) or not isinstance(n_pairs, numbers.Integral) or n_pairs < 1:
            raise GraphclustError(f"n_pairs must be a positive integer or None, got {n_pairs!r}")
        n_pos = int(round(int(n_pairs) / (1.0 + self.neg_per_pos)))
        n_neg = int(n_pairs) - n_pos
        pos_l, pos_r = self._positives(n_pos, gen)
        neg_l, neg_r = self._negatives(n_neg, gen)
        target = torch.cat([torch.ones(n_pos), torch.zeros(n_neg)])
        return PairBatch(torch.cat([pos_l, neg_l]), torch.cat([pos_r, neg_r]), target)

    def _positives(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def _negatives(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError


def _default_knn(X: np.ndarray, k: int, method: str, device: str):
    # imported lazily: the faiss dispatch lives beside the torch reference
    from graphclust.graph.knn import knn_search

    return knn_search(X, k, method=method, device=device)


# --------------------------------------------------------------------------- miners
def mutual_neighbors(indices: np.ndarray) -> np.ndarray:
    """Which kNN entries are mutual: ``out[i, c]`` is True when ``i`` is in row ``indices[i, c]``.

    Parameters
    ----------
    indices : ndarray of shape (n, k), integer
        Neighbour lists (``indices[i]`` holds row ids in ``[0, n)``).

    Returns
    -------
    ndarray of shape (n, k), bool

    Notes
    -----
    Each edge ``(i, j)`` is keyed ``i * n + j`` and looked up reversed, so memory stays
    O(n k) (no ``(n, k, k)`` comparison).
    """
    idx = np.asarray(indices, dtype=np.int64)
    n, k = idx.shape
    rows = np.repeat(np.arange(n, dtype=np.int64), k)
    return np.isin(idx.ravel() * n + rows, rows * n + idx.ravel()).reshape(n, k)


class KNNPairMiner(_BaseMiner):
    """Positives from input-space nearest neighbours, negatives uniformly at random (DGG).

    A positive pair is ``(i, j)`` with ``j`` drawn uniformly from the
    ``n_neighbors`` nearest neighbours of ``i`` (computed once in :meth:`prepare`).
    A negative pair is ``(i, j)`` with ``j`` uniform over all points except ``i``;
    that ``j`` is occasionally a true neighbour is tolerated, as in the reference.
    Anchors ``i`` cycle through random permutations of all points, so a natural
    epoch uses every point once as a positive anchor.

    Parameters
    ----------
    n_neighbors : int, default 10
        Neighbours per point that count as positives.
    neg_per_pos : float, default 1
        Negatives per positive.
    knn : callable, optional
        ``knn(X, k) -> KNNResult`` (or an ``(n_samples, k)`` index array) to
        inject another search. Default: ``graphclust.graph.knn.knn_search``
        with ``method`` and ``device`` (the torch reference while that is unavailable).
    method : str, default "exact"
        Search method passed to ``knn_search``.
    device : str, default "auto"
        Device for the default search.
    mutual : bool, default False
        Keep only mutual neighbours as positives: ``j`` among the ``n_neighbors`` nearest
        of ``i`` *and* ``i`` among those of ``j``. Such pairs are purer (MNIST raw pixels,
        ``n_neighbors=10``: 98.3% same-digit against 95.1% for all kNN pairs). Points
        without a mutual neighbour anchor no positive pair (they still take part in
        negatives and as partners).

    Attributes
    ----------
    neighbors_ : torch.LongTensor, shape (n_samples, n_neighbors)
        The positive candidates of each point (with ``mutual``: its mutual neighbours
        first, in distance order, then the others, which are never drawn).
    n_candidates_ : torch.LongTensor, shape (n_samples,)
        How many leading entries of each row of ``neighbors_`` are positive candidates.
    n_anchors_ : int
        Number of points that anchor positive pairs (all points unless ``mutual``).
    """

    def __init__(
        self,
        n_neighbors: int = 10,
        neg_per_pos: float = 1,
        *,
        knn: Callable[[np.ndarray, int], Any] | None = None,
        method: str = "exact",
        device: str = "auto",
        mutual: bool = False,
    ) -> None:
        if isinstance(n_neighbors, bool) or not isinstance(n_neighbors, numbers.Integral) or n_neighbors < 1:
            raise GraphclustError(f"n_neighbors must be a positive integer, got {n_neighbors!r}")
        if not isinstance(mutual, (bool, np.bool_)):
            raise GraphclustError(f"mutual must be True or False, got {mutual!r}")
        self.n_neighbors = int(n_neighbors)
        self.neg_per_pos = _check_neg_per_pos(neg_per_pos)
        self.knn = knn
        self.method = method
        self.device = device
        self.mutual = bool(mutual)
        self.neighbors_: torch.Tensor | None = None
        self.n_candidates_: torch.Tensor | None = None
        self.n_anchors_: int | None = None

    def __repr__(self) -> str:
        extra = "" if self.knn is None else f", knn={getattr(self.knn, '__name__', self.knn)!r}"
        if self.mutual:  # left out when off, so reprs (and run fingerprints) stay as they were
            extra += ", mutual=True"
        return (
            f"KNNPairMiner(n_neighbors={self.n_neighbors}, neg_per_pos={self.neg_per_pos:g}, "
            f"method={self.method!r}{extra})"
        )

    def prepare(self, X: Any) -> KNNPairMiner:
        """Compute the ``n_neighbors`` nearest neighbours of every row of ``X``."""
        X = check_features(X)
        n = X.shape[0]
        if self.n_neighbors >= n:
            raise GraphclustError(
                f"KNNPairMiner(n_neighbors={self.n_neighbors}) needs more than {self.n_neighbors} "
                f"points, X has {n}; use a smaller n_neighbors"
            )
        if self.knn is None:
            result = _default_knn(X, self.n_neighbors, self.method, self.device)
        else:
            result = self.knn(X, self.n_neighbors)
        idx = np.asarray(getattr(result, "indices", result))
        if idx.shape != (n, self.n_neighbors) or not np.issubdtype(idx.dtype, np.integer):
            raise GraphclustError(
                f"the kNN search returned indices of shape {idx.shape} and dtype {idx.dtype}; "
                f"expected integers of shape ({n}, {self.n_neighbors})"
            )
        if idx.min() < 0 or idx.max() >= n or (idx == np.arange(n)[:, None]).any():
            raise GraphclustError(
                "the kNN search returned out-of-range or self neighbours (e.g. -1 for missing "
                "results from an approximate index); use an exact search or a larger index"
            )
        idx = np.ascontiguousarray(idx, dtype=np.int64)
        count = np.full(n, self.n_neighbors, dtype=np.int64)
        if self.mutual:
            is_mutual = mutual_neighbors(idx)
            order = np.argsort(~is_mutual, axis=1, kind="stable")  # mutual first, in order
            idx = np.take_along_axis(idx, order, axis=1)
            count = is_mutual.sum(1)
            if not count.any():
                raise GraphclustError(
                    f"no point has a mutual neighbour among its {self.n_neighbors} nearest; "
                    "use a larger n_neighbors or mutual=False"
                )
        self.neighbors_ = torch.from_numpy(idx)
        self.n_candidates_ = torch.from_numpy(count)
        self._pos_anchors = torch.from_numpy(np.flatnonzero(count > 0))
        self._n_points = n
        self.n_anchors_ = int(self._pos_anchors.shape[0])
        return self

    def _positives(self, n, generator):
        left = _cycled(self._pos_anchors, n, generator)
        if self.mutual:
            col = _uniform_below(self.n_candidates_[left], generator)
        else:  # the draws of the plain miner, unchanged
            col = torch.randint(self.n_neighbors, (n,), generator=generator)
        return left, self.neighbors_[left, col]

    def _negatives(self, n, generator):
        n_points = self._n_points
        left = _cycled(torch.arange(n_points), n, generator)
        shift = torch.randint(1, n_points, (n,), generator=generator)  # never 0: no self pairs
        return left, (left + shift) % n_points


class LabelPairMiner(_BaseMiner):
    """Positives share a class label; negatives have different labels (semi-supervised).

    Points whose label equals ``unlabeled`` take part in no pair. Positive
    anchors cycle through the labelled points of classes with at least two
    members; a partner is uniform over the anchor's class (self excluded). A
    negative partner is uniform over labelled points of the other classes.

    Parameters
    ----------
    labels : array-like of shape (n_samples,)
        Class of each row of ``X``; ``unlabeled`` marks rows without a label.
    neg_per_pos : float, default 1
        Negatives per positive.
    unlabeled : int, default -1
        The label value meaning "no label".

    Attributes
    ----------
    n_anchors_ : int
        Number of labelled points that can anchor a positive pair.
    """

    def __init__(self, labels: Any, neg_per_pos: float = 1, *, unlabeled: int = -1) -> None:
        self.labels = labels
        self.neg_per_pos = _check_neg_per_pos(neg_per_pos)
        self.unlabeled = unlabeled
        self.n_anchors_: int | None = None

    def __repr__(self) -> str:
        return (
            f"LabelPairMiner(labels=<{len(self.labels)} labels>, neg_per_pos={self.neg_per_pos:g}, "
            f"unlabeled={self.unlabeled!r})"
        )

    def prepare(self, X: Any) -> LabelPairMiner:
        """Group the labelled rows of ``X`` by class."""
        n = check_features(X).shape[0]
        y = check_labels(self.labels, n, name="labels")
        labelled = np.flatnonzero(y != self.unlabeled)
        order = labelled[np.argsort(y[labelled], kind="stable")]  # labelled ids, grouped by class
        _, start, count = np.unique(y[order], return_index=True, return_counts=True)
        if count.size == 0 or count.max() < 2:
            raise GraphclustError(
                "LabelPairMiner needs at least one class with two or more labelled points to "
                "form positive pairs; label more points"
            )
        if self.neg_per_pos > 0 and count.size < 2:
            raise GraphclustError(
                "LabelPairMiner needs labelled points from at least two classes to form negative "
                "pairs; label more classes or set neg_per_pos=0"
            )
        # per position in `order`: where its class block starts and how long it is
        self._order = torch.from_numpy(order.astype(np.int64))
        self._start = torch.from_numpy(np.repeat(start, count).astype(np.int64))
        self._count = torch.from_numpy(np.repeat(count, count).astype(np.int64))
        self._pos_anchors = torch.nonzero(self._count >= 2).flatten()  # positions, not ids
        self.n_anchors_ = int(self._pos_anchors.shape[0])
        return self

    def _positives(self, n, generator):
        pos = _cycled(self._pos_anchors, n, generator)
        start, count = self._start[pos], self._count[pos]
        offset = 1 + _uniform_below(count - 1, generator)  # 1..count-1: never self
        partner = start + (pos - start + offset) % count
        return self._order[pos], self._order[partner]

    def _negatives(self, n, generator):
        n_lab = self._order.shape[0]
        pos = _cycled(torch.arange(n_lab), n, generator)
        start, count = self._start[pos], self._count[pos]
        # positions outside the class block, wrapping round: uniform over other classes
        partner = (start + count + _uniform_below(n_lab - count, generator)) % n_lab
        return self._order[pos], self._order[partner]

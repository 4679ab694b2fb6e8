"""What a model exposes for inspection, and the ``inspection.npz`` file of a run folder.

A fitted model that follows :class:`Inspectable` (``DGG`` and ``VaDE`` do) is
turned into the arrays of ``inspection.npz`` by :func:`inspection_arrays`; the
training code saves them with :func:`save_inspection`::

    arrays = inspection_arrays(model, X, graph=graph, y=y)
    save_inspection(run_dir, arrays)

``inspection.npz`` holds

======================  ===============  ==============================================
array                   shape, dtype     meaning
======================  ===============  ==============================================
``proba``               (n, K) float32   soft assignments ``gamma_ik = q(c = k | x_i)``
``embedding``           (n, M) float32   latent means
``edge_index``          (2, E) int64     optional; row 0 the neighbour ``j`` (source),
                                         row 1 the node ``i`` (target): PyG's flow, as
                                         :meth:`KNNGraph.to_edge_index`
``edge_affinity``       (E,) float32     with ``edge_index``: ``sum_k gamma_ik gamma_jk``
``y``                   (n,) int64       optional true labels
======================  ===============  ==============================================
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import scipy.sparse as sp

from graphclust.utils import GraphclustError, atomic_path

__all__ = [
    "INSPECTION_FILE",
    "Inspectable",
    "affinity_from_edges",
    "check_inspection_arrays",
    "edge_affinity",
    "inspection_arrays",
    "load_inspection",
    "save_inspection",
]

INSPECTION_FILE = "inspection.npz"
_REQUIRED = ("proba", "embedding")
_OPTIONAL = ("edge_index", "edge_affinity", "y")


@runtime_checkable
class Inspectable(Protocol):
    """A fitted clustering model that can be inspected.

    Attributes
    ----------
    labels_ : ndarray of shape (n_samples,)
        Hard cluster of each training sample.
    affinity_matrix_ : scipy.sparse matrix of shape (n_samples, n_samples)
        ``A[i, j] = sum_k gamma_ik gamma_jk`` on the edges ``i -> neighbour j`` of
        the model's graph. Models trained without a graph may raise
        ``AttributeError`` on access; :func:`inspection_arrays` then uses the
        ``graph`` it is given, or stores no affinity.
    """

    labels_: np.ndarray

    def predict_proba(self, X) -> np.ndarray:
        """Soft assignments, shape (n_samples, n_clusters), rows summing to 1."""
        ...

    def transform(self, X) -> np.ndarray:
        """Latent representation, shape (n_samples, latent_dim)."""
        ...

    @property
    def affinity_matrix_(self) -> sp.spmatrix: ...


def edge_affinity(proba: np.ndarray, edge_index: np.ndarray) -> np.ndarray:
    """``sum_k proba[i, k] proba[j, k]`` for each edge ``(j, i) = edge_index[:, e]``.

    Parameters
    ----------
    proba : ndarray of shape (n_nodes, n_clusters)
    edge_index : ndarray of shape (2, E)

    Returns
    -------
    ndarray of shape (E,), float32
    """
    P = np.asarray(proba, dtype=np.float32)
    ei = np.asarray(edge_index, dtype=np.int64)
    out = np.empty(ei.shape[1], dtype=np.float32)
    step = 1 << 20
    for s in range(0, ei.shape[1], step):
        src, dst = ei[0, s : s + step], ei[1, s : s + step]
        out[s : s + step] = np.einsum("ek,ek->e", P[dst], P[src])
    return out


def affinity_from_edges(edge_index, values, n_nodes: int) -> sp.csr_matrix:
    """CSR ``(n_nodes, n_nodes)`` with ``A[target, source] = value`` (duplicate edges summed).

    The inverse of the layout above: ``A[i, j]`` for node ``i`` and neighbour ``j``.
    Explicit zeros are kept, so the stored entries are exactly the edges.
    """
    ei = np.asarray(edge_index, dtype=np.int64)
    v = np.asarray(values, dtype=np.float64)
    A = sp.csr_matrix((v, (ei[1], ei[0])), shape=(n_nodes, n_nodes))
    A.sum_duplicates()
    A.sort_indices()
    return A


def inspection_arrays(model: Inspectable, X, graph=None, y=None) -> dict[str, np.ndarray]:
    """The ``inspection.npz`` arrays of a fitted model on its training data ``X``.

    Parameters
    ----------
    model : Inspectable
        Fitted; needs ``labels_``, ``predict_proba`` and ``transform``.
    X : array of shape (n_samples, n_features)
        The data the model was fitted on.
    graph : KNNGraph, optional
        A graph of ``X``; the learned affinity is computed on its edges from
        ``predict_proba(X)``. Without it the model's ``affinity_matrix_`` is
        used when it has one, else no ``edge_index``/``edge_affinity`` is stored.
    y : array of shape (n_samples,), optional
        True labels, stored as ``y``.

    Returns
    -------
    dict
        ``proba``, ``embedding`` and, when available, ``edge_index``,
        ``edge_affinity``, ``y`` (see the module docstring).
    """
    for attr in ("labels_", "predict_proba", "transform"):
        if not hasattr(model, attr):
            raise GraphclustError(
                f"{type(model).__name__} has no {attr!r}; inspection needs a fitted model with "
                "labels_, predict_proba(X) and transform(X) (the Inspectable protocol)"
            )
    n = len(np.asarray(model.labels_))
    proba = np.ascontiguousarray(model.predict_proba(X), dtype=np.float32)
    embedding = np.ascontiguousarray(model.transform(X), dtype=np.float32)
    arrays: dict[str, np.ndarray] = {"proba": proba, "embedding": embedding}
    if proba.shape[0] != n:
        raise GraphclustError(
            f"the model has {n} labels_ but predict_proba(X) gave {proba.shape[0]} rows; "
            "pass the data the model was fitted on"
        )
    if graph is not None:
        edge_index, _ = graph.to_edge_index()
        ei = edge_index.numpy().astype(np.int64)
        if graph.n_nodes != n:
            raise GraphclustError(
                f"the graph has {graph.n_nodes} nodes but the model was fitted on {n} samples"
            )
        arrays["edge_index"] = ei
        arrays["edge_affinity"] = edge_affinity(proba, ei)
    else:
        try:
            A = model.affinity_matrix_
        except AttributeError:
            A = None
        if A is not None:
            coo = sp.coo_matrix(A)
            arrays["edge_index"] = np.stack([coo.col, coo.row]).astype(np.int64)
            arrays["edge_affinity"] = coo.data.astype(np.float32)
    if y is not None:
        arrays["y"] = np.asarray(y).astype(np.int64)
    return check_inspection_arrays(arrays)


def check_inspection_arrays(arrays: dict[str, Any], n_nodes: int | None = None,
                            where: str = "inspection arrays") -> dict[str, np.ndarray]:
    """Validate the arrays of ``inspection.npz`` (names, shapes, ranges); return them typed.

    Raises
    ------
    GraphclustError
        Naming the array that is missing or malformed and what is expected.
    """
    missing = [k for k in _REQUIRED if k not in arrays]
    if missing:
        raise GraphclustError(
            f"{where} lack {missing} (found {sorted(arrays)}); expected proba (n, K), "
            "embedding (n, M) and optionally edge_index (2, E), edge_affinity (E,), y (n,)"
        )
    unknown = sorted(set(arrays) - set(_REQUIRED) - set(_OPTIONAL))
    if unknown:
        raise GraphclustError(
            f"{where} hold unknown arrays {unknown}; expected only "
            f"{list(_REQUIRED) + list(_OPTIONAL)}"
        )
    proba = np.asarray(arrays["proba"])
    emb = np.asarray(arrays["embedding"])
    if proba.ndim != 2 or proba.shape[1] < 1:
        raise GraphclustError(f"{where}: proba must be 2-D (n, K), got shape {proba.shape}")
    n = proba.shape[0]
    if n_nodes is not None and n != n_nodes:
        raise GraphclustError(
            f"{where}: proba has {n} rows but the run has {n_nodes} labels; the files come from "
            "different runs or data"
        )
    if emb.ndim != 2 or emb.shape[0] != n:
        raise GraphclustError(
            f"{where}: embedding must be (n={n}, M), got shape {emb.shape}"
        )
    for name, arr in (("proba", proba), ("embedding", emb)):
        if not np.issubdtype(arr.dtype, np.number) or not np.all(np.isfinite(arr)):
            raise GraphclustError(f"{where}: {name} must be finite numbers")
    if proba.min() < -1e-6 or proba.max() > 1 + 1e-6:
        raise GraphclustError(f"{where}: proba must hold probabilities in [0, 1]")
    out = {"proba": proba.astype(np.float32), "embedding": emb.astype(np.float32)}
    has_ei, has_aff = "edge_index" in arrays, "edge_affinity" in arrays
    if has_ei != has_aff:
        raise GraphclustError(
            f"{where}: edge_index and edge_affinity come together; found only "
            f"{'edge_index' if has_ei else 'edge_affinity'}"
        )
    if has_ei:
        ei = np.asarray(arrays["edge_index"])
        aff = np.asarray(arrays["edge_affinity"])
        if ei.ndim != 2 or ei.shape[0] != 2 or not np.issubdtype(ei.dtype, np.integer):
            raise GraphclustError(
                f"{where}: edge_index must be integer (2, E), got {ei.dtype} {ei.shape}"
            )
        if aff.shape != (ei.shape[1],):
            raise GraphclustError(
                f"{where}: edge_affinity must have shape ({ei.shape[1]},) to match edge_index, "
                f"got {aff.shape}"
            )
        if ei.size and (ei.min() < 0 or ei.max() >= n):
            raise GraphclustError(
                f"{where}: edge_index refers to nodes outside [0, {n})"
            )
        if not np.all(np.isfinite(aff)):
            raise GraphclustError(f"{where}: edge_affinity holds NaN/inf")
        out["edge_index"] = ei.astype(np.int64)
        out["edge_affinity"] = aff.astype(np.float32)
    if "y" in arrays:
        y = np.asarray(arrays["y"])
        if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer):
            raise GraphclustError(f"{where}: y must be integer labels of shape ({n},), got "
                                  f"{y.dtype} {y.shape}")
        out["y"] = y.astype(np.int64)
    return out


def save_inspection(run_dir: str | os.PathLike, arrays: dict[str, Any]) -> Path:
    """Validate ``arrays`` and write ``run_dir/inspection.npz`` atomically (no pickle)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise GraphclustError(f"run folder {run_dir} does not exist")
    checked = check_inspection_arrays(arrays)
    dest = run_dir / INSPECTION_FILE
    with atomic_path(dest) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, **checked)
    return dest


def load_inspection(path: str | os.PathLike, n_nodes: int | None = None) -> dict[str, np.ndarray]:
    """Read and validate an ``inspection.npz`` (see the module docstring)."""
    path = Path(path)
    try:
        archive = np.load(path, allow_pickle=False)
        if isinstance(archive, np.ndarray):
            raise GraphclustError(f"{path} holds a single .npy array, expected an .npz archive")
        with archive as z:
            arrays = {k: z[k] for k in z.files}
    except GraphclustError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise GraphclustError(f"could not read {path}: not a valid .npz ({exc})") from exc
    return check_inspection_arrays(arrays, n_nodes, where=str(path))

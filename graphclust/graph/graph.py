"""The kNN graph object: fixed-width neighbour lists + weights, saved as ``.npz``.

Large graphs (:mod:`graphclust.graph.large`) are folders of ``.npy`` files
(:data:`FOLDER_FILES`) that :meth:`KNNGraph.load` opens memory-mapped with ``mmap=True``.

Edges point from neighbour to node (``j -> i`` for each neighbour ``j`` of ``i``),
PyG's default ``source_to_target`` flow, so a ``MessagePassing`` layer aggregates
neighbour messages into each node.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from graphclust.graph.affinity import get_kernel, row_normalize
from graphclust.graph.knn import KNNResult, knn_search
from graphclust.utils import GraphclustError, atomic_path, check_features

__all__ = ["FOLDER_FILES", "SYMMETRIZE_MODES", "KNNGraph", "build_knn_graph", "data_fingerprint"]

SYMMETRIZE_MODES = ("none", "max", "mean", "min", "sum")
_FORMAT_VERSION = 1
# the files of a graph folder (labels.npy is optional)
FOLDER_FILES = {
    "indices": "indices.npy",
    "distances": "distances.npy",
    "weights": "weights.npy",
    "labels": "labels.npy",
    "meta": "meta.json",
}


def data_fingerprint(X: np.ndarray) -> str:
    """A short hash of a feature matrix, stored in graphs to detect "graph built for other data"."""
    shape = np.asarray(X.shape, dtype=np.int64)
    h = hashlib.sha256()
    h.update(shape.tobytes())
    # hashing every row is cheap (70k x 784 floats: ~0.1 s) and catches reordering;
    # blocks of rows keep the memory bounded (same digest as hashing all bytes at once)
    step = max(1, (1 << 24) // max(1, int(np.prod(shape[1:])) * 4))
    for start in range(0, max(1, int(shape[0])), step):
        h.update(np.ascontiguousarray(X[start : start + step], dtype=np.float32).tobytes())
    return h.hexdigest()[:16]


def _contiguous(arr: Any, dtype) -> np.ndarray:
    """``arr`` itself when it is already a C-contiguous ``dtype`` array (keeps memmaps), else a copy."""
    if isinstance(arr, np.ndarray) and arr.dtype == dtype and arr.flags.c_contiguous:
        return arr
    return np.ascontiguousarray(arr, dtype=dtype)


@dataclass
class KNNGraph:
    """A directed kNN graph with per-edge weights.

    Attributes
    ----------
    indices : ndarray of shape (n_nodes, k), int64
        ``indices[i]`` are the neighbours of node ``i`` (nearest first, never ``i``).
    weights : ndarray of shape (n_nodes, k), float32
        Edge weights ``w_ij`` (row-normalised when ``meta["normalized"]``).
    distances : ndarray of shape (n_nodes, k), float32
        Euclidean distances in the space the graph was built in.
    labels : ndarray of shape (n_nodes,), int64, optional
        Ground-truth classes, kept for purity reports.
    meta : dict
        JSON-serialisable provenance (kernel, k, embedder, data fingerprint, ...).
    """

    indices: np.ndarray
    weights: np.ndarray
    distances: np.ndarray
    labels: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.indices = _contiguous(self.indices, np.int64)
        self.weights = _contiguous(self.weights, np.float32)
        self.distances = _contiguous(self.distances, np.float32)
        if self.indices.ndim != 2:
            raise GraphclustError(f"indices must be 2-D (n_nodes, k), got {self.indices.shape}")
        if self.weights.shape != self.indices.shape or self.distances.shape != self.indices.shape:
            raise GraphclustError(
                f"indices {self.indices.shape}, weights {self.weights.shape} and distances "
                f"{self.distances.shape} must have the same shape"
            )
        n = self.indices.shape[0]
        if self.indices.size and (self.indices.min() < 0 or self.indices.max() >= n):
            raise GraphclustError(f"neighbour indices must lie in [0, {n}); the graph is corrupt")
        if self.labels is not None:
            self.labels = np.asarray(self.labels, dtype=np.int64)
            if self.labels.shape != (n,):
                raise GraphclustError(
                    f"labels have shape {self.labels.shape} but the graph has {n} nodes"
                )

    # ------------------------------------------------------------------ basics
    @property
    def n_nodes(self) -> int:
        return int(self.indices.shape[0])

    @property
    def k(self) -> int:
        return int(self.indices.shape[1])

    @property
    def n_edges(self) -> int:
        return int(self.indices.size)

    def __repr__(self) -> str:
        return (
            f"KNNGraph(n_nodes={self.n_nodes}, k={self.k}, kernel={self.meta.get('kernel')!r}, "
            f"labels={'yes' if self.labels is not None else 'no'})"
        )

    def check_matches(self, X: np.ndarray, strict: bool = True) -> None:
        """Raise if this graph was not built for ``X`` (row count, and fingerprint when stored)."""
        n = X.shape[0]
        if n != self.n_nodes:
            raise GraphclustError(
                f"the graph has {self.n_nodes} nodes but the data has {n} rows; "
                "the graph was built for other data: rebuild it with `graphclust build-graph`"
            )
        fp = self.meta.get("data_fingerprint")
        if strict and fp is not None and fp != data_fingerprint(X):
            raise GraphclustError(
                "the graph's data fingerprint does not match these data (same size, other "
                "values or order); rebuild the graph for these data"
            )

    def topk(self, k: int) -> KNNGraph:
        """The graph restricted to each node's ``k`` nearest neighbours (weights re-normalised
        when the graph's weights were row-normalised)."""
        if not 1 <= k <= self.k:
            raise GraphclustError(f"k must lie in [1, {self.k}], got {k}")
        w = self.weights[:, :k]
        if self.meta.get("normalized"):
            w = row_normalize(w)
        meta = dict(self.meta, k=k)
        return KNNGraph(self.indices[:, :k], w, self.distances[:, :k], self.labels, meta)

    # ------------------------------------------------------------------ conversions
    def to_scipy(self, symmetrize: str = "none") -> sp.csr_matrix:
        """Sparse ``(n_nodes, n_nodes)`` matrix with ``A[i, j] = w_ij``.

        Parameters
        ----------
        symmetrize : {"none", "max", "mean", "min", "sum"}
            How to combine ``w_ij`` and ``w_ji``: ``max`` keeps an edge present in
            either direction, ``min`` only mutual edges, ``mean`` averages with zero
            for a missing direction (``(A + A.T) / 2``), ``sum`` adds them.
        """
        if symmetrize not in SYMMETRIZE_MODES:
            raise GraphclustError(
                f"unknown symmetrize mode {symmetrize!r}; expected one of {SYMMETRIZE_MODES}"
            )
        n, k = self.indices.shape
        rows = np.repeat(np.arange(n, dtype=np.int64), k)
        A = sp.csr_matrix(
            (self.weights.ravel().astype(np.float64), (rows, self.indices.ravel())), shape=(n, n)
        )
        if symmetrize == "none":
            out = A
        elif symmetrize == "max":
            out = A.maximum(A.T)
        elif symmetrize == "min":
            out = A.minimum(A.T)
        elif symmetrize == "mean":
            out = (A + A.T) * 0.5
        else:
            out = A + A.T
        out = sp.csr_matrix(out, dtype=np.float32)
        out.eliminate_zeros()
        out.sort_indices()
        return out

    def to_edge_index(
        self, symmetrize: str = "none", self_loops: float | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """PyG ``(edge_index (2, E) int64, edge_weight (E,) float32)``, flow ``j -> i``.

        Parameters
        ----------
        symmetrize : str
            As in :meth:`to_scipy`.
        self_loops : float, optional
            Add an ``i -> i`` edge of this weight to every node.
        """
        if symmetrize == "none":
            n, k = self.indices.shape
            dst = np.repeat(np.arange(n, dtype=np.int64), k)
            src = self.indices.ravel()
            w = self.weights.ravel()
        else:
            A = self.to_scipy(symmetrize).tocoo()
            dst, src, w = A.row.astype(np.int64), A.col.astype(np.int64), A.data
        if self_loops is not None:
            loop = np.arange(self.n_nodes, dtype=np.int64)
            src = np.concatenate([src, loop])
            dst = np.concatenate([dst, loop])
            w = np.concatenate([w, np.full(self.n_nodes, self_loops, dtype=np.float32)])
        edge_index = torch.from_numpy(np.stack([src, dst]))
        return edge_index, torch.from_numpy(np.ascontiguousarray(w, dtype=np.float32))

    def to_dgl(self, symmetrize: str = "none"):
        """A ``dgl.DGLGraph`` with edge feature ``"w"`` (needs the optional ``dgl`` extra)."""
        try:
            import dgl
        except Exception as exc:  # ImportError, or DGL failing to load beside this torch
            raise GraphclustError(
                "DGL is not available: install the optional extra (`pip install graphclust[dgl]`); "
                f"DGL from PyPI loads only with torch 2.0-2.2 ({type(exc).__name__}: {exc})"
            ) from exc
        edge_index, w = self.to_edge_index(symmetrize)
        g = dgl.graph((edge_index[0], edge_index[1]), num_nodes=self.n_nodes)
        g.edata["w"] = w
        return g

    @classmethod
    def from_dgl(cls, g, weight_key: str = "w") -> KNNGraph:
        """Rebuild a fixed-width kNN graph from a DGL graph with the same in-degree everywhere."""
        src, dst = (t.cpu().numpy() for t in g.edges())
        w = g.edata[weight_key].cpu().numpy() if weight_key in g.edata else np.ones(len(src))
        return cls._from_edges(src, dst, w, g.num_nodes())

    @classmethod
    def _from_edges(cls, src, dst, w, n) -> KNNGraph:
        order = np.lexsort((-np.asarray(w), dst))
        src, dst, w = np.asarray(src)[order], np.asarray(dst)[order], np.asarray(w)[order]
        deg = np.bincount(dst, minlength=n)
        if deg.min() != deg.max():
            raise GraphclustError("a KNNGraph needs the same number of neighbours for every node")
        k = int(deg[0])
        return cls(src.reshape(n, k), w.reshape(n, k), np.zeros((n, k), np.float32))

    # ------------------------------------------------------------------ I/O
    def save(self, path: str | os.PathLike) -> Path:
        """Save to ``.npz`` atomically (no pickle: meta is stored as a JSON string)."""
        path = Path(path)
        if path.suffix != ".npz":
            raise GraphclustError(f"graph files end in .npz, got {path.name!r}")
        arrays = {
            "indices": self.indices,
            "weights": self.weights,
            "distances": self.distances,
            "meta_json": np.array(json.dumps(dict(self.meta, format_version=_FORMAT_VERSION))),
        }
        if self.labels is not None:
            arrays["labels"] = self.labels
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, mmap: bool = False) -> KNNGraph:
        """Load a graph saved by :meth:`save` (``.npz``) or a graph folder.

        Parameters
        ----------
        path : path-like
            A ``.npz`` file, or a folder written by
            :func:`graphclust.graph.large.build_knn_graph_chunked`.
        mmap : bool
            Open the arrays of a graph folder memory-mapped (read-only
            ``np.memmap``: nothing is read until used). ``.npz`` files are
            compressed and always loaded into memory.

        Raises
        ------
        GraphclustError
            When ``path`` is missing, foreign or corrupt.
        """
        path = Path(path)
        if path.is_dir():
            return cls._load_folder(path, mmap)
        if not path.is_file():
            raise GraphclustError(f"graph file {path} does not exist")
        try:
            with np.load(path, allow_pickle=False) as z:
                missing = {"indices", "weights", "distances", "meta_json"} - set(z.files)
                if missing:
                    raise GraphclustError(
                        f"{path} is not a graphclust graph (missing arrays {sorted(missing)}; "
                        f"found {sorted(z.files)}); build one with `graphclust build-graph`"
                    )
                meta = json.loads(str(z["meta_json"]))
                labels = z["labels"] if "labels" in z.files else None
                return cls(z["indices"], z["weights"], z["distances"], labels, meta)
        except GraphclustError:
            raise
        except (OSError, ValueError, zipfile.BadZipFile, EOFError, json.JSONDecodeError) as exc:
            raise GraphclustError(
                f"could not read graph file {path}: it is not a valid .npz ({exc}); rebuild it"
            ) from exc

    @classmethod
    def _load_folder(cls, path: Path, mmap: bool) -> KNNGraph:
        required = [FOLDER_FILES[key] for key in ("indices", "weights", "distances", "meta")]
        missing = [name for name in required if not (path / name).is_file()]
        if missing:
            raise GraphclustError(
                f"{path} is not a graphclust graph folder (missing {missing}); build one with "
                "`graphclust build-graph --chunked`"
            )
        mode = "r" if mmap else None
        try:
            meta = json.loads((path / FOLDER_FILES["meta"]).read_text())
            arrays = {
                key: np.load(path / FOLDER_FILES[key], mmap_mode=mode, allow_pickle=False)
                for key in ("indices", "weights", "distances")
            }
            labels_path = path / FOLDER_FILES["labels"]
            labels = np.load(labels_path, allow_pickle=False) if labels_path.is_file() else None
        except (OSError, ValueError, EOFError, json.JSONDecodeError) as exc:
            raise GraphclustError(
                f"could not read graph folder {path}: {exc}; rebuild it"
            ) from exc
        return cls(arrays["indices"], arrays["weights"], arrays["distances"], labels, meta)


def build_knn_graph(
    X: np.ndarray,
    k: int = 20,
    kernel: str = "gaussian",
    normalize: bool = True,
    method: str = "exact",
    device: str = "auto",
    labels: np.ndarray | None = None,
    knn: KNNResult | None = None,
    kernel_params: dict[str, Any] | None = None,
    progress: bool = False,
    meta: dict[str, Any] | None = None,
) -> KNNGraph:
    """kNN search + affinity kernel (+ row normalisation) on ``X``.

    Parameters
    ----------
    X : array of shape (n_samples, n_features)
        The space the graph is built in (e.g. Siamese embeddings).
    k : int
        Neighbours per node, self excluded.
    kernel : {"gaussian", "uniform", "heat"}
        Affinity kernel (see :mod:`graphclust.graph.affinity`).
    normalize : bool
        Row-normalise the weights so that ``sum_j w_ij = 1``.
    method, device :
        Passed to :func:`graphclust.graph.knn.knn_search`.
    labels : array of shape (n_samples,), optional
        Stored with the graph for purity reports.
    knn : KNNResult, optional
        Precomputed neighbours (skips the search).
    kernel_params : dict, optional
        Extra keyword arguments of the kernel (``k_sigma`` for gaussian, ``t`` for heat).
    """
    Xc = check_features(X)
    kern = get_kernel(kernel)
    if knn is None:
        kwargs = {"progress": progress} if progress else {}
        knn = knn_search(Xc, k, method=method, device=device, **kwargs)
    elif knn.indices.shape != (Xc.shape[0], k):
        raise GraphclustError(
            f"precomputed neighbours have shape {knn.indices.shape}, expected {(Xc.shape[0], k)}"
        )
    w = kern(knn.distances, **(kernel_params or {}))
    if normalize:
        w = row_normalize(w)
    info = {
        "k": int(k),
        "kernel": kernel,
        "kernel_params": kernel_params or {},
        "normalized": bool(normalize),
        "method": method,
        "n_nodes": int(Xc.shape[0]),
        "data_fingerprint": None,
    }
    info.update(meta or {})
    return KNNGraph(knn.indices, w, knn.distances, labels, info)

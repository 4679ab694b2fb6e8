"""What a report is made of: :class:`ReportInput`, loaded from a graph file or a run folder.

:func:`load_inspection_input` validates everything (files, shapes, row counts,
the data the graph or run was built from) before anything is written, so a bad
input fails with a clear :class:`~graphclust.utils.GraphclustError` and no output.

A *run folder* (written by ``graphclust train``) holds::

    config.json       model, data {name, source}, n_clusters, graph (path or null)
    labels.npy        (n,) int64 predicted clusters
    metrics.json      final acc / nmi / ari (with labels), stage_seconds
    history.jsonl     one JSON object per epoch: epoch, loss (+ acc, nmi, ari)
    checkpoints/      at least one file: a folder without it is not a finished run
    inspection.npz    proba, embedding, optional edge_index + edge_affinity, y
                      (see :mod:`graphclust.inspect.interface`)
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import scipy.sparse as sp

from graphclust.inspect.interface import (
    INSPECTION_FILE,
    affinity_from_edges,
    inspection_arrays,
    load_inspection,
)
from graphclust.inspect.stats import check_affinity, encode_groups
from graphclust.utils import GraphclustError, check_features

__all__ = ["RUN_FILES", "Grouping", "ReportInput", "graph_matrix", "load_inspection_input"]

RUN_FILES = ("config.json", "labels.npy", INSPECTION_FILE, "checkpoints/")


class Grouping(NamedTuple):
    """The node groups a report is organised by.

    Attributes
    ----------
    codes : ndarray of shape (n_nodes,), int64
        Group of each node in ``[0, n_groups)``.
    names : ndarray of shape (n_groups,)
        The original value of each group (cluster id, label, component id).
    kind : str
        ``"cluster"`` (predicted), ``"label"`` (true classes) or ``"component"``
        (connected components of a graph without labels).
    """

    codes: np.ndarray
    names: np.ndarray
    kind: str


@dataclass
class ReportInput:
    """Everything a report shows about one graph or one trained model.

    Attributes
    ----------
    kind : {"graph", "run", "model"}
    name : str
        Data set name.
    affinity : scipy.sparse.csr_matrix of shape (n_nodes, n_nodes)
        ``A[i, j]`` on each edge ``i -> neighbour j``: the learned affinity
        ``sum_k gamma_ik gamma_jk`` of a run, else the kNN weights.
    affinity_source : str
        One line saying which of the two ``affinity`` is.
    clusters : ndarray of shape (n_nodes,) or None
        Predicted clusters in ``[0, n_clusters)`` (``None`` for a bare graph).
    labels : ndarray of shape (n_nodes,) or None
        True classes.
    proba : ndarray of shape (n_nodes, n_clusters) or None
        Soft assignments.
    embedding : ndarray of shape (n_nodes, latent_dim) or None
    graph : KNNGraph or None
    X : ndarray of shape (n_nodes, n_features) or None
        Input features, for sample grids and input-space purity.
    image_shape : tuple of int or None
    model : str or None
    history : list of dict
        Per-epoch records (``epoch``, ``loss``, ``acc``, ``nmi``, ``ari``).
    metrics : dict
    config : dict
    path : Path or None
        Where it was loaded from.
    notes : list of str
        Things the report should mention (a missing graph, no data, ...).
    """

    kind: str
    name: str
    affinity: sp.csr_matrix
    affinity_source: str
    clusters: np.ndarray | None = None
    labels: np.ndarray | None = None
    proba: np.ndarray | None = None
    embedding: np.ndarray | None = None
    graph: Any = None
    X: np.ndarray | None = None
    image_shape: tuple[int, ...] | None = None
    model: str | None = None
    history: list = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    path: Path | None = None
    notes: list = field(default_factory=list)

    def __post_init__(self) -> None:
        self.affinity = check_affinity(self.affinity)
        n = self.affinity.shape[0]

        def rows(name: str, arr, ndim: int):
            if arr is None:
                return None
            a = np.asarray(arr)
            if a.ndim != ndim or a.shape[0] != n:
                shape = "(n,)" if ndim == 1 else "(n, d)"
                raise GraphclustError(
                    f"{name} must have shape {shape} with n={n} (the affinity's nodes), "
                    f"got {a.shape}"
                )
            return a

        self.clusters = rows("clusters", self.clusters, 1)
        self.labels = rows("labels", self.labels, 1)
        self.proba = rows("proba", self.proba, 2)
        self.embedding = rows("embedding", self.embedding, 2)
        self.X = rows("X", self.X, 2)
        for name in ("clusters", "labels"):
            arr = getattr(self, name)
            if arr is not None:
                if not np.issubdtype(arr.dtype, np.integer):
                    raise GraphclustError(f"{name} must be integers, got dtype {arr.dtype}")
                setattr(self, name, arr.astype(np.int64))
        if self.clusters is not None and self.clusters.size and self.clusters.min() < 0:
            raise GraphclustError("clusters must be >= 0")
        if (self.proba is not None and self.clusters is not None
                and self.clusters.max(initial=-1) >= self.proba.shape[1]):
            raise GraphclustError(
                    f"clusters go up to {self.clusters.max()} but proba has only "
                    f"{self.proba.shape[1]} columns"
                )
        if self.image_shape is not None:
            self.image_shape = tuple(int(s) for s in self.image_shape)
            if self.X is not None and int(np.prod(self.image_shape)) != self.X.shape[1]:
                raise GraphclustError(
                    f"image_shape {self.image_shape} does not match {self.X.shape[1]} features"
                )
        if self.graph is not None and self.graph.n_nodes != n:
            raise GraphclustError(
                f"the graph has {self.graph.n_nodes} nodes but the affinity has {n}"
            )

    # ------------------------------------------------------------------ derived
    @property
    def n_nodes(self) -> int:
        return int(self.affinity.shape[0])

    @property
    def n_clusters(self) -> int | None:
        """Number of clusters (with empty ones), ``None`` without predicted clusters."""
        if self.clusters is None:
            return None
        k = int(self.clusters.max(initial=-1)) + 1
        if self.proba is not None:
            k = max(k, self.proba.shape[1])
        return max(k, int(_cfg_get(self.config, "n_clusters") or 0))

    def grouping(self) -> Grouping:
        """Predicted clusters, else true labels, else connected components."""
        if self.clusters is not None:
            k = self.n_clusters or 0
            return Grouping(self.clusters, np.arange(k), "cluster")
        if self.labels is not None:
            codes, names = encode_groups(self.labels)
            return Grouping(codes, names, "label")
        from scipy.sparse.csgraph import connected_components

        _, comp = connected_components(self.affinity, directed=True, connection="weak")
        codes, names = encode_groups(comp)
        return Grouping(codes, names, "component")

    def confidence(self) -> np.ndarray | None:
        """``proba[i, cluster_i]`` for a model, else ``None``."""
        if self.proba is None or self.clusters is None:
            return None
        return self.proba[np.arange(self.n_nodes), self.clusters].astype(np.float64)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_model(cls, model, X, graph=None, y=None, name: str = "data",
                   image_shape: tuple[int, ...] | None = None) -> ReportInput:
        """Inspect a fitted :class:`~graphclust.inspect.interface.Inspectable` in a notebook.

        Parameters
        ----------
        model : Inspectable
        X : array of shape (n_samples, n_features)
            The data it was fitted on.
        graph : KNNGraph, optional
            A graph of ``X``: the learned affinity is shown on its edges; without it
            the model's ``affinity_matrix_`` is used (an error when it has none).
        y : array of shape (n_samples,), optional
        """
        X = check_features(X)
        arrays = inspection_arrays(model, X, graph=graph, y=y)
        n = X.shape[0]
        if "edge_index" in arrays:
            A = affinity_from_edges(arrays["edge_index"], arrays["edge_affinity"], n)
            source = "learned affinity sum_k gamma_ik gamma_jk on the graph's edges"
        else:
            raise GraphclustError(
                f"{type(model).__name__} has no affinity_matrix_; pass graph=KNNGraph of X"
            )
        return cls(
            kind="model", name=name, affinity=A, affinity_source=source,
            clusters=np.asarray(model.labels_).astype(np.int64), labels=arrays.get("y"),
            proba=arrays["proba"], embedding=arrays["embedding"], graph=graph, X=X,
            image_shape=image_shape, model=type(model).__name__,
            history=list(getattr(model, "history_", []) or []),
        )


# --------------------------------------------------------------------------- loading
def load_inspection_input(
    path: str | os.PathLike, data: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
) -> ReportInput:
    """Load and validate a graph ``.npz`` or a run folder for a report.

    Parameters
    ----------
    path : path-like
        A graph saved by ``graphclust build-graph`` (its ``NAME.config.json``
        beside it names the data), or a run folder of ``graphclust train``.
    data : str or path-like, optional
        The data set (name or file) the graph/run was built from; overrides the
        one named in its config. Needed only for sample grids and input-space
        purity.
    data_dir : path-like, optional
        Folder of the benchmark files.

    Raises
    ------
    GraphclustError
        On anything that is not a graph or a finished run, or data whose row
        count (or fingerprint) does not match.
    """
    p = Path(path)
    if p.is_dir():
        return _load_run(p, data, data_dir)
    if p.is_file():
        if p.name == INSPECTION_FILE:
            raise GraphclustError(
                f"{p} is the inspection file of a run; pass its run folder {p.parent} instead"
            )
        if p.suffix.lower() != ".npz":
            raise GraphclustError(
                f"{p} is a {p.suffix or 'suffix-less'} file; expected a graph .npz from "
                "`graphclust build-graph` or a run folder of `graphclust train`"
            )
        return _load_graph(p, data, data_dir)
    raise GraphclustError(
        f"{p} does not exist; expected a graph .npz from `graphclust build-graph` or a run "
        "folder of `graphclust train`"
    )


def graph_matrix(graph) -> sp.csr_matrix:
    """The kNN weights as CSR ``A[i, indices[i, m]] = weights[i, m]`` (zero weights kept)."""
    n, k = graph.indices.shape
    rows = np.repeat(np.arange(n, dtype=np.int64), k)
    A = sp.csr_matrix(
        (graph.weights.ravel().astype(np.float64), (rows, graph.indices.ravel())), shape=(n, n)
    )
    A.sum_duplicates()
    A.sort_indices()
    return A


def _read_json(path: Path, what: str) -> dict:
    try:
        obj = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GraphclustError(f"could not read {what} {path}: {exc}") from exc
    if not isinstance(obj, dict):
        raise GraphclustError(f"{what} {path} must hold a JSON object, found {type(obj).__name__}")
    return obj


def _read_history(path: Path) -> list[dict]:
    out = []
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise GraphclustError(f"could not read {path}: {exc}") from exc
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise GraphclustError(
                f"{path} line {i} is not JSON ({exc}); expected one JSON object per epoch"
            ) from exc
        if not isinstance(rec, dict):
            raise GraphclustError(f"{path} line {i} is not a JSON object")
        out.append(rec)
    return out


def _cfg_get(cfg: dict, key: str) -> Any:
    """A config value at the top level, else under ``settings``/``args``."""
    if key in cfg:
        return cfg[key]
    for section in ("settings", "args"):
        sub = cfg.get(section)
        if isinstance(sub, dict) and key in sub:
            return sub[key]
    return None


def _load_data(data, data_dir, cfg: dict, owner: str):
    """Load the features a graph/run was built from; ``None`` when nothing names them."""
    from graphclust.data.loaders import available_datasets, load_dataset

    if data is not None:
        return load_dataset(data, data_dir=data_dir)
    spec = cfg.get("data") if isinstance(cfg.get("data"), dict) else {}
    name, source = spec.get("name"), spec.get("source")
    if not name and not source:
        return None
    max_samples = _cfg_get(cfg, "max_samples")
    hint = (f"the data named in the config of {owner} (name {name!r}, source {source!r}) could "
            "not be loaded")
    try:
        if source == "sklearn" or name == "digits":
            return load_dataset("digits", max_samples=max_samples)
        if name in available_datasets():
            folder = data_dir
            if folder is None and source and Path(source).is_file():
                folder = Path(source).parent
            return load_dataset(name, data_dir=folder, max_samples=max_samples)
        if source and Path(source).is_file():
            return load_dataset(Path(source), max_samples=max_samples)
    except GraphclustError as exc:
        raise GraphclustError(f"{hint}: {exc}; pass the data with --data") from exc
    raise GraphclustError(f"{hint}: no such file or data set; pass the data with --data")


def _check_rows(loaded, n: int, owner: str) -> None:
    if loaded is not None and loaded.X.shape[0] != n:
        raise GraphclustError(
            f"the data {loaded.name!r} ({loaded.source}) has {loaded.X.shape[0]} rows but "
            f"{owner} has {n} nodes; pass the data it was built from with --data"
        )


def _load_graph(path: Path, data, data_dir) -> ReportInput:
    from graphclust.graph.graph import KNNGraph

    graph = KNNGraph.load(path)
    cfg_path = path.with_name(path.stem + ".config.json")
    cfg = _read_json(cfg_path, "graph config") if cfg_path.is_file() else {}
    notes = []
    loaded = _load_data(data, data_dir, cfg, str(path))
    _check_rows(loaded, graph.n_nodes, f"the graph {path}")
    if loaded is not None:
        graph.check_matches(loaded.X, strict=True)
    else:
        notes.append(f"no data: {cfg_path.name} was not found and --data was not given, so "
                     "there are no sample grids and no input-space purity")
    labels = graph.labels
    if labels is None and loaded is not None:
        labels = loaded.y
    name = (loaded.name if loaded is not None else None) or graph.meta.get("data") or path.stem
    return ReportInput(
        kind="graph", name=str(name), affinity=graph_matrix(graph),
        affinity_source=f"kNN weights of {path.name} ({graph.meta.get('kernel', 'unknown')} "
                        f"kernel, k={graph.k})",
        labels=labels, graph=graph, X=None if loaded is None else loaded.X,
        image_shape=None if loaded is None else loaded.image_shape,
        config=cfg, path=path, notes=notes,
    )


def _resolve_graph_path(value, run_dir: Path) -> Path | None:
    if not value:
        return None
    p = Path(value).expanduser()
    if p.is_absolute():
        return p
    for base in (run_dir, Path.cwd()):
        if (base / p).is_file():
            return base / p
    return run_dir / p


def _load_run(run_dir: Path, data, data_dir) -> ReportInput:
    from graphclust.graph.graph import KNNGraph

    present = sorted(p.name + ("/" if p.is_dir() else "") for p in run_dir.iterdir())
    expected = ", ".join(RUN_FILES)
    if not (run_dir / "config.json").is_file():
        found = ", ".join(present[:12]) + (" ..." if len(present) > 12 else "") or "nothing"
        raise GraphclustError(
            f"{run_dir} is not a run folder: found {found}; expected {expected} "
            "(from `graphclust train`), or a graph .npz"
        )
    ckpt = run_dir / "checkpoints"
    if not ckpt.is_dir() or not any(ckpt.iterdir()):
        raise GraphclustError(
            f"{run_dir} is not a finished run: "
            f"{'checkpoints/ is empty' if ckpt.is_dir() else 'it has no checkpoints/ folder'}; "
            "finish or resume the training (`graphclust train ... --resume`) first"
        )
    for name in ("labels.npy", INSPECTION_FILE):
        if not (run_dir / name).is_file():
            raise GraphclustError(
                f"run folder {run_dir} has no {name} (found {', '.join(present)}); expected "
                f"{expected}. A run trained before inspection support needs retraining, or "
                "save_inspection(run_dir, inspection_arrays(model, X)) from a notebook"
            )
    cfg = _read_json(run_dir / "config.json", "run config")
    try:
        clusters = np.load(run_dir / "labels.npy", allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise GraphclustError(f"could not read {run_dir / 'labels.npy'}: {exc}") from exc
    if clusters.ndim != 1 or not np.issubdtype(clusters.dtype, np.integer) or clusters.size < 2:
        raise GraphclustError(
            f"{run_dir / 'labels.npy'} must hold (n,) integer clusters, got {clusters.dtype} "
            f"{clusters.shape}"
        )
    if clusters.min() < 0:
        raise GraphclustError(f"{run_dir / 'labels.npy'} holds negative cluster ids")
    n = clusters.shape[0]
    arrays = load_inspection(run_dir / INSPECTION_FILE, n_nodes=n)
    metrics_path = run_dir / "metrics.json"
    metrics = _read_json(metrics_path, "metrics") if metrics_path.is_file() else {}
    history: list[dict] = []
    for hname in ("history.jsonl", "log.jsonl"):
        if (run_dir / hname).is_file():
            history = _read_history(run_dir / hname)
            break
    notes = []

    graph = None
    gpath = _resolve_graph_path(_cfg_get(cfg, "graph"), run_dir)
    if gpath is not None:
        if gpath.is_file():
            graph = KNNGraph.load(gpath)
            if graph.n_nodes != n:
                raise GraphclustError(
                    f"the run's graph {gpath} has {graph.n_nodes} nodes but labels.npy has {n} "
                    "rows; the config names a graph of other data"
                )
        elif "edge_index" not in arrays:
            raise GraphclustError(
                f"the run's graph {gpath} (config.json 'graph') does not exist and "
                f"{INSPECTION_FILE} has no edge_affinity: there is no affinity to show"
            )
        else:
            notes.append(f"the run's graph {gpath} was not found: no graph purity curve")

    if "edge_index" in arrays:
        A = affinity_from_edges(arrays["edge_index"], arrays["edge_affinity"], n)
        source = "learned affinity sum_k gamma_ik gamma_jk on the graph's edges"
    elif graph is not None:
        A = graph_matrix(graph)
        source = (f"kNN weights of {gpath.name} (the run stored no learned affinity; "
                  "a model without a graph)")
        notes.append("the run stored no learned edge affinity: the matrices show the kNN weights")
    else:
        raise GraphclustError(
            f"{run_dir}: {INSPECTION_FILE} has no edge_index/edge_affinity and config.json names "
            "no graph; there is no affinity to show (train with a graph, or save the arrays "
            "with inspection_arrays(model, X, graph=graph))"
        )

    loaded = _load_data(data, data_dir, cfg, f"run {run_dir}")
    _check_rows(loaded, n, f"the run {run_dir}")
    if loaded is None:
        notes.append("no data named in config.json and no --data: no sample grids, no "
                     "input-space purity")
    elif graph is not None and graph.meta.get("data_fingerprint"):
        graph.check_matches(loaded.X, strict=True)
    labels = arrays.get("y")
    if labels is None and loaded is not None:
        labels = loaded.y
    if labels is None and graph is not None:
        labels = graph.labels
    spec = cfg.get("data") if isinstance(cfg.get("data"), dict) else {}
    name = spec.get("name") or (loaded.name if loaded is not None else run_dir.name)
    return ReportInput(
        kind="run", name=str(name), affinity=A, affinity_source=source, clusters=clusters,
        labels=labels, proba=arrays["proba"], embedding=arrays["embedding"], graph=graph,
        X=None if loaded is None else loaded.X,
        image_shape=None if loaded is None else loaded.image_shape,
        model=_cfg_get(cfg, "model"), history=history, metrics=metrics, config=cfg,
        path=run_dir, notes=notes,
    )


"""Small inputs for the inspection tests: a toy image data set, its graph and a fake run folder.

The run folder follows the contract of ``graphclust train`` (see
:mod:`graphclust.inspect.inputs`); it is written by hand so that the tests need no training.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest

from graphclust.graph.graph import build_knn_graph, data_fingerprint
from graphclust.inspect import edge_affinity, save_inspection
from graphclust.utils import write_json


class Toy(NamedTuple):
    X: np.ndarray
    y: np.ndarray
    data: Path
    graph: Path


def make_toy(folder: Path, n: int = 60, k: int = 5) -> Toy:
    """Three classes of 4x4 "images": class c lights up row c (plus noise)."""
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), n // 3)
    X = rng.random((n, 16)).astype(np.float32) * 0.4
    for c in range(3):
        X[y == c, 4 * c : 4 * c + 4] += 0.6
    data = folder / "toy.npz"
    np.savez(data, X=X, y=y, shape=np.array([4, 4]))
    graph = build_knn_graph(X, k=k, method="torch", labels=y,
                            meta={"data": "toy", "data_fingerprint": data_fingerprint(X),
                                  "embedder": "none"})
    gpath = folder / "toy_graph.npz"
    graph.save(gpath)
    write_json(folder / "toy_graph.config.json",
               {"data": {"name": "toy", "source": str(data), "shape": [n, 16]}})
    return Toy(X, y, data, gpath)


def make_run(folder: Path, toy: Toy, *, name: str = "run", affinity: bool = True,
             graph: bool = True, checkpoints: bool = True) -> Path:
    """A finished run whose clusters are the classes relabelled (c -> (c + 1) % 3), 3 mistakes."""
    from graphclust.graph.graph import KNNGraph

    run = folder / name
    run.mkdir()
    n = toy.y.size
    clusters = (toy.y + 1) % 3
    clusters[[0, 25, 50]] = clusters[[1, 1, 1]]  # three nodes put in cluster 1
    rng = np.random.default_rng(1)
    logits = 4.0 * np.eye(3)[clusters] + rng.normal(scale=0.5, size=(n, 3))
    proba = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    embedding = 3.0 * np.eye(3)[clusters] + rng.normal(scale=0.3, size=(n, 3))
    arrays = {"proba": proba.astype(np.float32), "embedding": embedding.astype(np.float32),
              "y": toy.y}
    if affinity:
        ei, _ = KNNGraph.load(toy.graph).to_edge_index()
        arrays["edge_index"] = ei.numpy()
        arrays["edge_affinity"] = edge_affinity(proba, ei.numpy())
    save_inspection(run, arrays)
    np.save(run / "labels.npy", clusters.astype(np.int64))
    if checkpoints:
        (run / "checkpoints").mkdir()
        (run / "checkpoints" / "model.safetensors").write_bytes(b"weights")
    write_json(run / "config.json", {
        "model": "dgg", "data": {"name": "toy", "source": str(toy.data)}, "n_clusters": 3,
        "graph": str(toy.graph) if graph else None,
    })
    write_json(run / "metrics.json", {"acc": 0.95, "nmi": 0.9, "ari": 0.88,
                                      "stage_seconds": {"pretrain": 1.0, "train": 2.0}})
    lines = [json.dumps({"epoch": e, "loss": 10.0 / (e + 1), "acc": 0.6 + 0.07 * e,
                         "nmi": 0.5 + 0.08 * e, "ari": 0.4 + 0.1 * e}) for e in range(5)]
    (run / "history.jsonl").write_text("\n".join(lines) + "\n")
    return run


@pytest.fixture
def toy(tmp_path) -> Toy:
    return make_toy(tmp_path)


@pytest.fixture
def run_dir(tmp_path, toy) -> Path:
    return make_run(tmp_path, toy)


@pytest.fixture
def run_factory(tmp_path, toy):
    """``run_factory(name=..., affinity=..., graph=..., checkpoints=...)`` -> another run folder."""

    def factory(**kwargs) -> Path:
        return make_run(tmp_path, toy, **kwargs)

    return factory

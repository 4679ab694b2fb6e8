"""The Inspectable protocol, inspection_arrays and the inspection.npz file."""

import numpy as np
import pytest
import scipy.sparse as sp

from graphclust.graph.graph import KNNGraph
from graphclust.inspect import (
    Inspectable,
    affinity_from_edges,
    edge_affinity,
    inspection_arrays,
    load_inspection,
    save_inspection,
)
from graphclust.inspect.inputs import ReportInput
from graphclust.utils import GraphclustError

PROBA = np.array([[1, 0], [1, 0], [0.5, 0.5], [0, 1]], dtype=np.float32)
GRAPH = KNNGraph(np.array([[1], [0], [3], [2]]), np.ones((4, 1)), np.ones((4, 1)))


class FakeModel:
    """Follows Inspectable; ``affinity`` None mimics a model trained without a graph."""

    def __init__(self, affinity=None):
        self.labels_ = PROBA.argmax(1)
        self._affinity = affinity

    def predict_proba(self, X):
        return PROBA[: len(X)]

    def transform(self, X):
        return np.asarray(X)[:, :2] * 2

    @property
    def affinity_matrix_(self):
        if self._affinity is None:
            raise AttributeError("trained without a graph")
        return self._affinity


def test_edge_affinity_by_hand():
    ei = np.array([[1, 3, 2], [0, 2, 3]])  # edges 1->0, 3->2, 2->3 (source, target)
    np.testing.assert_allclose(edge_affinity(PROBA, ei), [1.0, 0.5, 0.5])
    A = affinity_from_edges(ei, [1.0, 0.5, 0.5], 4)
    assert A[0, 1] == 1.0 and A[2, 3] == 0.5 and A[3, 2] == 0.5 and A.nnz == 3


def test_inspection_arrays_with_graph():
    X = np.arange(12, dtype=np.float32).reshape(4, 3)
    model = FakeModel()
    assert not isinstance(model, Inspectable)  # its affinity_matrix_ raises
    arr = inspection_arrays(model, X, graph=GRAPH, y=[0, 0, 1, 1])
    assert set(arr) == {"proba", "embedding", "edge_index", "edge_affinity", "y"}
    np.testing.assert_array_equal(arr["edge_index"], [[1, 0, 3, 2], [0, 1, 2, 3]])
    np.testing.assert_allclose(arr["edge_affinity"], [1.0, 1.0, 0.5, 0.5])
    np.testing.assert_allclose(arr["embedding"], X[:, :2] * 2)


def test_inspection_arrays_from_affinity_matrix_or_none():
    X = np.zeros((4, 3), np.float32)
    A = sp.csr_matrix(([0.25], ([2], [3])), shape=(4, 4))  # node 2 -> neighbour 3
    model = FakeModel(A)
    assert isinstance(model, Inspectable)
    arr = inspection_arrays(model, X)
    np.testing.assert_array_equal(arr["edge_index"], [[3], [2]])
    np.testing.assert_allclose(arr["edge_affinity"], [0.25])
    assert "edge_index" not in inspection_arrays(FakeModel(), X)


def test_inspection_arrays_rejects_non_models():
    with pytest.raises(GraphclustError, match="predict_proba"):
        inspection_arrays(object(), np.zeros((4, 2)))


def test_save_and_load_roundtrip(tmp_path):
    arr = inspection_arrays(FakeModel(), np.ones((4, 3), np.float32), graph=GRAPH)
    path = save_inspection(tmp_path, arr)
    assert path.name == "inspection.npz" and sorted(p.name for p in tmp_path.iterdir()) == [
        "inspection.npz"]
    back = load_inspection(path, n_nodes=4)
    for key in arr:
        np.testing.assert_array_equal(back[key], arr[key])
    with pytest.raises(GraphclustError, match="5 labels"):
        load_inspection(path, n_nodes=5)


@pytest.mark.parametrize("bad, message", [
    ({"embedding": np.zeros((4, 2))}, "lack"),
    ({"proba": PROBA, "embedding": np.zeros((3, 2))}, "embedding must be"),
    ({"proba": PROBA * 2, "embedding": np.zeros((4, 2))}, "probabilities"),
    ({"proba": PROBA, "embedding": np.zeros((4, 2)), "edge_index": np.zeros((2, 1), int)},
     "come together"),
    ({"proba": PROBA, "embedding": np.zeros((4, 2)), "edge_index": np.array([[0], [9]]),
      "edge_affinity": np.ones(1)}, "outside"),
    ({"proba": PROBA, "embedding": np.zeros((4, 2)), "extra": np.ones(1)}, "unknown"),
])
def test_save_inspection_validates(tmp_path, bad, message):
    with pytest.raises(GraphclustError, match=message):
        save_inspection(tmp_path, bad)
    assert list(tmp_path.iterdir()) == []


def test_report_input_from_model():
    X = np.arange(12, dtype=np.float32).reshape(4, 3)
    inp = ReportInput.from_model(FakeModel(), X, graph=GRAPH, y=[0, 0, 1, 1])
    assert inp.kind == "model" and inp.n_nodes == 4 and inp.n_clusters == 2
    assert inp.affinity[2, 3] == pytest.approx(0.5)
    with pytest.raises(GraphclustError, match="graph=KNNGraph"):
        ReportInput.from_model(FakeModel(), X)

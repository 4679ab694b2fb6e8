import numpy as np
import pytest
import torch

from graphclust.graph.graph import KNNGraph, build_knn_graph, data_fingerprint
from graphclust.graph.knn import KNNResult, knn_torch
from graphclust.utils import GraphclustError


def line_graph():
    # 4 points on a line at 0, 1, 3, 6; k = 2
    X = np.array([[0.0], [1.0], [3.0], [6.0]], dtype=np.float32)
    knn = knn_torch(X, 2)
    return X, knn


def test_line_neighbours_and_uniform_weights():
    X, knn = line_graph()
    np.testing.assert_array_equal(knn.indices, [[1, 2], [0, 2], [1, 0], [2, 1]])
    np.testing.assert_allclose(knn.distances, [[1, 3], [1, 2], [2, 3], [3, 5]])
    g = build_knn_graph(X, 2, kernel="uniform", knn=knn)
    np.testing.assert_allclose(g.weights, 0.5)


def test_to_scipy_symmetrize_modes():
    X, knn = line_graph()
    w = np.array([[1, 2], [3, 4], [5, 6], [7, 8]], dtype=np.float32)
    g = KNNGraph(knn.indices, w, knn.distances)
    A = g.to_scipy().toarray()
    assert A[0, 1] == 1 and A[0, 2] == 2 and A[1, 0] == 3 and A[3, 2] == 7
    # edge 0-3 does not exist, 2->3 does not exist but 3->2 does
    assert A[2, 3] == 0
    np.testing.assert_allclose(g.to_scipy("max").toarray(), np.maximum(A, A.T))
    np.testing.assert_allclose(g.to_scipy("min").toarray(), np.minimum(A, A.T))
    np.testing.assert_allclose(g.to_scipy("mean").toarray(), (A + A.T) / 2)
    np.testing.assert_allclose(g.to_scipy("sum").toarray(), A + A.T)
    with pytest.raises(GraphclustError, match="symmetrize"):
        g.to_scipy("both")


def test_edge_index_flow_neighbour_to_node():
    X, knn = line_graph()
    g = build_knn_graph(X, 2, kernel="uniform", knn=knn)
    ei, ew = g.to_edge_index()
    assert ei.shape == (2, 8) and ew.shape == (8,)
    # row 1 (targets) are the nodes, row 0 (sources) their neighbours
    for s, t in ei.t().tolist():
        assert s in g.indices[t]
    ei2, ew2 = g.to_edge_index(self_loops=0.5)
    assert ei2.shape == (2, 12)
    assert torch.equal(ei2[:, -4:], torch.arange(4).repeat(2, 1))
    assert torch.all(ew2[-4:] == 0.5)
    eis, ews = g.to_edge_index("max")
    A = g.to_scipy("max").toarray()
    np.testing.assert_allclose(A[eis[1].numpy(), eis[0].numpy()], ews.numpy())


def test_save_load_roundtrip(tmp_path):
    X, knn = line_graph()
    g = build_knn_graph(X, 2, knn=knn, labels=np.array([0, 0, 1, 1]),
                        meta={"data_fingerprint": data_fingerprint(X)})
    p = g.save(tmp_path / "g.npz")
    h = KNNGraph.load(p)
    np.testing.assert_array_equal(h.indices, g.indices)
    np.testing.assert_array_equal(h.weights, g.weights)
    np.testing.assert_array_equal(h.labels, g.labels)
    assert h.meta["kernel"] == "gaussian" and h.meta["format_version"] == 1
    h.check_matches(X)
    with pytest.raises(GraphclustError, match="fingerprint"):
        h.check_matches(X + 1)
    with pytest.raises(GraphclustError, match="4 nodes"):
        h.check_matches(np.zeros((5, 1), np.float32))
    assert list(tmp_path.iterdir()) == [p]  # no temp files left


def test_load_bad_files(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip at all")
    with pytest.raises(GraphclustError, match="not a valid .npz"):
        KNNGraph.load(bad)
    other = tmp_path / "other.npz"
    np.savez(other, X=np.zeros(3))
    with pytest.raises(GraphclustError, match="not a graphclust graph"):
        KNNGraph.load(other)
    with pytest.raises(GraphclustError, match="does not exist"):
        KNNGraph.load(tmp_path / "missing.npz")
    X, knn = line_graph()
    g = build_knn_graph(X, 2, knn=knn)
    with pytest.raises(GraphclustError, match=".npz"):
        g.save(tmp_path / "g.txt")
    with pytest.raises(GraphclustError, match="does not exist"):
        g.save(tmp_path / "nofolder" / "g.npz")


def test_constructor_validation():
    with pytest.raises(GraphclustError, match="same shape"):
        KNNGraph(np.zeros((3, 2)), np.zeros((3, 1)), np.zeros((3, 2)))
    with pytest.raises(GraphclustError, match="corrupt"):
        KNNGraph(np.full((3, 1), 7), np.zeros((3, 1)), np.zeros((3, 1)))
    with pytest.raises(GraphclustError, match="labels"):
        KNNGraph(np.zeros((3, 1)), np.zeros((3, 1)), np.zeros((3, 1)), labels=np.zeros(2))


def test_topk_renormalises():
    X, knn = line_graph()
    g = build_knn_graph(X, 2, kernel="uniform", knn=knn)
    g1 = g.topk(1)
    assert g1.k == 1 and np.allclose(g1.weights, 1.0)
    np.testing.assert_array_equal(g1.indices[:, 0], g.indices[:, 0])


def test_precomputed_knn_shape_checked():
    X, knn = line_graph()
    with pytest.raises(GraphclustError, match="precomputed"):
        build_knn_graph(X, 3, knn=knn)


def test_dgl_missing_gives_clear_error():
    X, knn = line_graph()
    g = build_knn_graph(X, 2, knn=knn)
    try:
        import dgl  # noqa: F401
    except Exception:
        with pytest.raises(GraphclustError, match="DGL is not available"):
            g.to_dgl()
    else:  # pragma: no cover - only where DGL loads
        h = KNNGraph.from_dgl(g.to_dgl())
        np.testing.assert_array_equal(np.sort(h.indices, 1), np.sort(g.indices, 1))

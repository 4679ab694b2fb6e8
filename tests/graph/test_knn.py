"""kNN search: every method against the torch reference, plus hand-checkable cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from graphclust.graph.knn import (
    METHODS,
    ExactSearch,
    KNNResult,
    PCARerankSearch,
    knn_search,
    knn_torch,
)
from graphclust.utils import GraphclustError

# exact strategies and options that must reproduce the reference index for index
EXACT_CASES = [
    pytest.param("exact", {}, id="exact"),
    pytest.param("exact", {"block_size": 37}, id="exact-blocks-not-dividing-n"),
    pytest.param("exact", {"block_size": 37, "reorder": False}, id="exact-no-reorder"),
    pytest.param("exact", {"block_size": 37, "backend": "torch"}, id="exact-torch-backend"),
    pytest.param("faiss-flat", {}, id="faiss-flat"),
    pytest.param("torch", {"block_size": 50}, id="torch"),
    pytest.param("approx", {"n_components": 64}, id="approx-full-rank-is-exact"),
]
APPROX_CASES = [
    pytest.param("approx", {"n_components": 6, "candidate_factor": 3, "block_size": 64}, id="approx"),
    pytest.param("ivf", {"nlist": 8, "nprobe": 4}, id="ivf"),
    pytest.param("hnsw", {}, id="hnsw"),
]
ALL_CASES = EXACT_CASES + APPROX_CASES


def random_data(n: int = 211, d: int = 8, seed: int = 0) -> np.ndarray:
    """Continuous random data: distance ties have probability zero."""
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


def manifold_data(n: int = 400, d: int = 24, seed: int = 0) -> np.ndarray:
    """Clustered points on a 3-d linear manifold in ``d`` dims, plus a little noise."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=4.0, size=(4, 3))
    latent = centers[rng.integers(0, 4, size=n)] + rng.normal(size=(n, 3))
    X = latent @ rng.normal(size=(3, d)) + 0.01 * rng.normal(size=(n, d))
    return X.astype(np.float32)


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    hits = [len(set(a) & set(b)) for a, b in zip(found, truth)]
    return float(np.sum(hits)) / truth.size


def assert_no_self(res: KNNResult) -> None:
    rows = np.arange(res.indices.shape[0])[:, None]
    assert not (res.indices == rows).any()


# --------------------------------------------------------------------------- hand-checked
def test_four_points_on_a_line():
    # points 0, 1, 3, 7: every neighbour list and distance can be read off the line
    X = np.array([[0.0], [1.0], [3.0], [7.0]], dtype=np.float32)
    for method in ("exact", "faiss-flat", "torch"):
        res = knn_search(X, 2, method=method)
        np.testing.assert_array_equal(res.indices, [[1, 2], [0, 2], [1, 0], [2, 1]])
        np.testing.assert_allclose(res.distances, [[1, 3], [1, 2], [2, 3], [4, 6]])
        assert res.indices.dtype == np.int64 and res.distances.dtype == np.float32


def test_three_four_five_triangle():
    # a 3-4-5 right triangle: distances are the side lengths
    X = np.array([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]])
    res = knn_search(X, 2)
    np.testing.assert_array_equal(res.indices, [[1, 2], [0, 2], [0, 1]])
    np.testing.assert_allclose(res.distances, [[3, 4], [3, 5], [4, 5]])


# --------------------------------------------------------------------------- vs reference
@pytest.mark.parametrize(("method", "options"), EXACT_CASES)
@pytest.mark.parametrize("k", [1, 7])
def test_exact_methods_match_reference(method, options, k):
    X = random_data()
    ref = knn_torch(X, k)
    # the data really is ties-free at float32 resolution around the k-th neighbour
    d_all = knn_torch(X, k + 1).distances
    assert np.min(np.diff(d_all, axis=1) / d_all[:, 1:]) > 1e-5
    res = knn_search(X, k, method=method, **options)
    assert res.indices.shape == res.distances.shape == (X.shape[0], k)
    np.testing.assert_array_equal(res.indices, ref.indices)
    np.testing.assert_allclose(res.distances, ref.distances, rtol=1e-4)


@pytest.mark.parametrize("backend", ["heap", "torch"])
def test_exact_matches_faiss_on_several_blocks_and_large_k(backend):
    # k >= 32 switches diagonal blocks to partition seeding; 6 blocks of 64
    X = random_data(n=380, d=6, seed=3)
    ours = knn_search(X, 40, method="exact", block_size=64, backend=backend)
    flat = knn_search(X, 40, method="faiss-flat")
    ref = knn_torch(X, 40)
    np.testing.assert_array_equal(ours.indices, flat.indices)
    np.testing.assert_array_equal(ours.indices, ref.indices)
    np.testing.assert_allclose(ours.distances, ref.distances, rtol=1e-4)


@pytest.mark.parametrize(("method", "options"), APPROX_CASES)
def test_approximate_methods_recall(method, options):
    X = manifold_data()
    truth = knn_torch(X, 10).indices
    res = knn_search(X, 10, method=method, **options)
    assert recall(res.indices, truth) >= 0.9
    assert_no_self(res)
    # distances are true distances of the returned pairs, ascending
    valid = res.indices >= 0
    true_d = np.linalg.norm(X[:, None, :] - X[np.maximum(res.indices, 0)], axis=2)
    np.testing.assert_allclose(res.distances[valid], true_d[valid], rtol=1e-4, atol=1e-5)
    assert (np.diff(res.distances, axis=1) >= 0).all()


# --------------------------------------------------------------------------- properties
@pytest.mark.parametrize(("method", "options"), ALL_CASES)
def test_self_never_a_neighbour(method, options):
    res = knn_search(manifold_data(n=150), 5, method=method, **options)
    assert_no_self(res)


@pytest.mark.parametrize(("method", "options"), ALL_CASES)
def test_duplicates_found_at_distance_zero(method, options):
    X = manifold_data(n=120)
    X[[10, 40, 70, 100]] = X[10]  # four identical points
    res = knn_search(X, 3, method=method, **options)
    assert_no_self(res)
    for i in (10, 40, 70, 100):
        assert set(res.indices[i]) == {10, 40, 70, 100} - {i}
        np.testing.assert_array_equal(res.distances[i], 0.0)


@pytest.mark.parametrize(
    ("method", "options"),
    [("exact", {"block_size": 8}), ("faiss-flat", {}), ("torch", {"block_size": 8})],
)
def test_more_duplicates_than_k(method, options):
    # 6 copies, k = 2: faiss may return k + 1 copies without self among them
    X = random_data(n=40, d=3)
    copies = [0, 5, 9, 20, 21, 33]
    X[copies] = X[0]
    res = knn_search(X, 2, method=method, **options)
    assert_no_self(res)
    for i in copies:
        assert set(res.indices[i]) <= set(copies) - {i}
        np.testing.assert_array_equal(res.distances[i], 0.0)


@pytest.mark.parametrize(
    ("method", "options"),
    [
        ("exact", {}),
        ("exact", {"block_size": 8}),
        ("faiss-flat", {}),
        ("torch", {}),
        ("hnsw", {}),
        ("approx", {"n_components": 2, "block_size": 8}),
    ],
)
def test_k_is_n_minus_one(method, options):
    X = random_data(n=30, d=4)
    res = knn_search(X, 29, method=method, **options)
    for i, row in enumerate(res.indices):
        assert sorted(row) == [j for j in range(30) if j != i]
    assert (np.diff(res.distances, axis=1) >= 0).all()


@pytest.mark.parametrize(("method", "options"), [("exact", {"block_size": 16}), ("torch", {})])
def test_far_from_origin_and_near_duplicates(method, options):
    # an offset of 1000 ruins |x|^2 + |y|^2 - 2 x.y in float32 unless the data are
    # centred; a pair 1e-3 apart must come out at 1e-3, not at the ~1e-2 noise level
    X = random_data(n=80, d=5, seed=2) + 1000.0
    X[1] = X[0]
    X[1, 0] += 1e-3
    ref = knn_torch(X.astype(np.float64), 3)
    res = knn_search(X, 3, method=method, **options)
    np.testing.assert_array_equal(res.indices, ref.indices)
    np.testing.assert_allclose(res.distances, ref.distances, rtol=1e-3)
    assert res.indices[0, 0] == 1  # 1e-3 rounded to the float32 grid at 1000
    np.testing.assert_allclose(res.distances[0, 0], abs(X[1, 0] - X[0, 0]), rtol=1e-4)


def test_block_size_larger_than_k_and_tiny_blocks():
    X = random_data(n=50, d=3, seed=1)
    ref = knn_torch(X, 12)
    for block in (8, 9, 13, 49, 50, 4096):
        res = knn_search(X, 12, block_size=block)
        np.testing.assert_array_equal(res.indices, ref.indices)


def test_strategy_object_and_tensor_input():
    X = torch.from_numpy(random_data(n=64))
    ref = knn_torch(X, 4)
    res = knn_search(X, 4, method=ExactSearch(block_size=16))
    np.testing.assert_array_equal(res.indices, ref.indices)
    res = knn_search(X, 4, method=PCARerankSearch(n_components=8))  # full rank: exact
    np.testing.assert_array_equal(res.indices, ref.indices)


def test_n_threads_is_restored():
    before = torch.get_num_threads()
    knn_search(random_data(n=40), 3, n_threads=1)
    assert torch.get_num_threads() == before


def test_progress_bar_does_not_change_the_result():
    X = random_data(n=60)
    res = knn_search(X, 3, block_size=16, progress=True)
    np.testing.assert_array_equal(res.indices, knn_torch(X, 3).indices)


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("X", "k", "kwargs", "match"),
    [
        (np.zeros((5, 2)), 5, {}, "only 5 points"),
        (np.zeros((5, 2)), 0, {}, "k must be >= 1"),
        (np.zeros((5, 2)), 2.5, {}, "k must be an integer"),
        (np.array([[0.0, 1.0], [np.nan, 2.0], [1.0, 1.0]]), 1, {}, "NaN"),
        (np.arange(5.0), 1, {}, "2-D"),
        (np.zeros((5, 2)), 1, {"method": "kdtree"}, "unknown kNN method"),
        (np.zeros((5, 2)), 1, {"method": "ivf", "ef_search": 3}, "unknown option"),
        (np.zeros((5, 2)), 1, {"block_size": 0}, "block_size"),
        (np.zeros((5, 2)), 1, {"method": "approx", "candidate_factor": 0.5}, "candidate_factor"),
        (np.zeros((5, 2)), 1, {"backend": "numba"}, "backend"),
        (np.zeros((5, 2)), 1, {"method": ExactSearch(), "block_size": 8}, "strategy object"),
    ],
)
def test_bad_input_raises(X, k, kwargs, match):
    with pytest.raises(GraphclustError, match=match):
        knn_search(X, k, **kwargs)


def test_unknown_method_lists_the_valid_ones():
    with pytest.raises(GraphclustError) as err:
        knn_search(np.zeros((5, 2)), 1, method="kdtree")
    for name in METHODS:
        assert name in str(err.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only error")
def test_cuda_request_without_cuda_raises():
    with pytest.raises(GraphclustError, match="CUDA is not available"):
        knn_search(random_data(n=20), 3, device="cuda")
    # auto falls back to the CPU
    assert knn_search(random_data(n=20), 3, device="auto").indices.shape == (20, 3)

import json
import os

import numpy as np
import pytest

from graphclust.graph.affinity import heat, row_normalize, self_tuning_gaussian
from graphclust.graph.graph import KNNGraph, build_knn_graph, data_fingerprint
from graphclust.graph.knn import knn_torch
from graphclust.graph.large import NpyFile, build_knn_graph_chunked, load_large_graph
from graphclust.utils import GraphclustError

N, D, K = 2000, 16, 5


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(N, D)).astype(np.float32)
    path = tmp_path_factory.mktemp("src") / "X.npy"
    np.save(path, X)
    return X, path, knn_torch(X, K)


def exact_ivf(**kw):
    # nprobe = nlist: every cell is scanned, so IVF-Flat is an exact search
    return dict(nlist=16, nprobe=16, chunk_size=333, **kw)  # 333 does not divide 2000


@pytest.mark.parametrize("shard_size", [None, 700])
def test_chunked_ivf_equals_exact_search(data, tmp_path, shard_size):
    X, path, ref = data
    g = build_knn_graph_chunked(
        np.load(path, mmap_mode="r"), K, tmp_path / "g", shard_size=shard_size, **exact_ivf()
    )
    np.testing.assert_array_equal(g.indices, ref.indices)
    np.testing.assert_allclose(g.distances, ref.distances, rtol=1e-4, atol=1e-5)
    assert not (g.indices == np.arange(N)[:, None]).any()  # self excluded
    assert all(isinstance(a, np.memmap) for a in (g.indices, g.weights, g.distances))
    assert g.indices.dtype == np.int64 and g.weights.dtype == np.float32
    assert g.meta["index"]["n_shards"] == (1 if shard_size is None else 3)
    assert g.meta["data_fingerprint"] == data_fingerprint(X)
    assert set(g.meta["seconds"]) == {"sample", "train", "add", "search", "weights"}
    names = sorted(p.name for p in (tmp_path / "g").iterdir())
    assert names == ["distances.npy", "indices.npy", "meta.json", "weights.npy"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g"]  # no temp folder left


def test_in_memory_array_and_memmap_view_give_the_same_graph(data, tmp_path):
    X, path, _ = data
    a = build_knn_graph_chunked(X[:1500], K, tmp_path / "a", **exact_ivf())
    b = build_knn_graph_chunked(np.load(path, mmap_mode="r")[:1500], K, tmp_path / "b", **exact_ivf())
    np.testing.assert_array_equal(a.indices, knn_torch(X[:1500], K).indices)
    np.testing.assert_array_equal(a.indices, b.indices)


@pytest.mark.parametrize("kernel, fn", [("gaussian", self_tuning_gaussian), ("heat", heat)])
def test_weights_match_in_memory_kernel(data, tmp_path, kernel, fn):
    X, _, ref = data
    g = build_knn_graph_chunked(X, K, tmp_path / "g", kernel=kernel, **exact_ivf())
    mem = build_knn_graph(X, K, kernel=kernel, knn=ref)
    np.testing.assert_allclose(g.weights, mem.weights, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(g.weights, row_normalize(fn(ref.distances)), rtol=1e-4, atol=1e-6)
    raw = build_knn_graph_chunked(X, K, tmp_path / "raw", kernel=kernel, normalize=False,
                                  **exact_ivf())
    np.testing.assert_allclose(raw.weights, fn(ref.distances), rtol=1e-4, atol=1e-6)


def test_ivfpq_excludes_self_and_finds_most_neighbours(data, tmp_path):
    X, _, ref = data
    g = build_knn_graph_chunked(X, K, tmp_path / "g", index="ivfpq", nlist=8, nprobe=8,
                                pq_m=8, pq_nbits=6, chunk_size=512)
    assert not (g.indices == np.arange(N)[:, None]).any()
    assert (np.diff(g.distances, axis=1) >= 0).all()
    recall = np.mean([len(set(a) & set(b)) / K for a, b in zip(g.indices, ref.indices)])
    assert recall > 0.5  # 8 bytes for 16 floats: compressed, but far better than chance
    assert g.meta["index"]["kind"] == "ivfpq" and g.meta["index"]["pq_m"] == 8


def test_labels_meta_and_load_without_mmap(data, tmp_path):
    X, _, _ = data
    y = np.arange(N) % 3
    build_knn_graph_chunked(X, K, tmp_path / "g", labels=y, meta={"data": "gauss"}, **exact_ivf())
    g = KNNGraph.load(tmp_path / "g")
    assert type(g.indices) is np.ndarray and not isinstance(g.indices, np.memmap)
    np.testing.assert_array_equal(g.labels, y)
    assert g.meta["data"] == "gauss" and g.meta["k"] == K
    assert isinstance(load_large_graph(tmp_path / "g").weights, np.memmap)
    np.testing.assert_allclose(g.weights.sum(1), 1.0, rtol=1e-5)


def test_failure_midway_leaves_nothing(data, tmp_path):
    X, _, _ = data

    def broken_kernel(distances):
        raise RuntimeError("kernel failed")

    out = tmp_path / "g"
    with pytest.raises(RuntimeError, match="kernel failed"):
        build_knn_graph_chunked(X, K, out, kernel=broken_kernel, **exact_ivf())
    Xbad = X.copy()
    Xbad[1900, 3] = np.nan  # in the last chunk, after earlier chunks were added
    with pytest.raises(GraphclustError, match="NaN.*first bad row: 1900"):
        build_knn_graph_chunked(Xbad, K, out, train_size=100, **exact_ivf())
    assert list(tmp_path.iterdir()) == []


def test_failure_with_force_keeps_the_old_graph(data, tmp_path):
    X, _, _ = data
    out = tmp_path / "g"
    build_knn_graph_chunked(X, K, out, **exact_ivf())
    before = (out / "indices.npy").read_bytes()
    with pytest.raises(GraphclustError, match="exists already"):
        build_knn_graph_chunked(X, K, out, **exact_ivf())
    with pytest.raises(GraphclustError, match="NaN"):
        build_knn_graph_chunked(np.full((N, D), np.nan, np.float32), K, out, force=True,
                                **exact_ivf())
    assert (out / "indices.npy").read_bytes() == before
    build_knn_graph_chunked(X, 3, out, force=True, **exact_ivf())
    assert load_large_graph(out).k == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g"]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"k": N}, "only 2000 points"),
        ({"k": 0}, "k must be >= 1"),
        ({"index": "hnsw"}, "index must be one of"),
        ({"chunk_size": 0}, "chunk_size must be"),
        ({"nlist": 4000}, "training rows"),
        ({"index": "ivfpq", "pq_m": 5}, "must divide"),
        ({"kernel": "cosine"}, "unknown kernel"),
        ({"labels": np.zeros(3)}, "labels has 3 entries"),
    ],
)
def test_bad_arguments(data, tmp_path, kwargs, message):
    X, _, _ = data
    args = dict(dict(k=K, nlist=16, nprobe=16), **kwargs)
    with pytest.raises(GraphclustError, match=message):
        build_knn_graph_chunked(X, out_path=tmp_path / "g", **args)
    assert list(tmp_path.iterdir()) == []


def test_bad_data_and_paths(data, tmp_path):
    X, _, _ = data
    with pytest.raises(GraphclustError, match="2-D"):
        build_knn_graph_chunked(X[:, 0], K, tmp_path / "g")
    with pytest.raises(GraphclustError, match="numeric"):
        build_knn_graph_chunked(np.array([["a", "b"]] * 4), 1, tmp_path / "g")
    with pytest.raises(GraphclustError, match="does not exist"):
        build_knn_graph_chunked(X, K, tmp_path / "missing" / "g", **exact_ivf())
    (tmp_path / "file").write_text("x")
    with pytest.raises(GraphclustError, match="exists already"):
        build_knn_graph_chunked(X, K, tmp_path / "file", **exact_ivf())


def test_unwritable_folder(data, tmp_path):
    X, _, _ = data
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("running as a user who can write anywhere (root)")
        with pytest.raises(GraphclustError, match="not writable"):
            build_knn_graph_chunked(X, K, ro / "g", **exact_ivf())
    finally:
        ro.chmod(0o700)


def test_too_few_probes_is_an_error(tmp_path):
    # two far-apart groups: with one probe the 3 points of the small group cannot find 5 neighbours
    X = np.concatenate([np.zeros((3, 2)), np.full((60, 2), 100.0)]).astype(np.float32)
    X += np.random.default_rng(0).normal(scale=0.01, size=X.shape).astype(np.float32)
    with pytest.raises(GraphclustError, match="raise nprobe"):
        build_knn_graph_chunked(X, 5, tmp_path / "g", nlist=2, nprobe=1, train_size=63)
    assert list(tmp_path.iterdir()) == []


def test_graph_folder_errors(tmp_path):
    (tmp_path / "g").mkdir()
    with pytest.raises(GraphclustError, match="not a graphclust graph folder"):
        KNNGraph.load(tmp_path / "g", mmap=True)
    for name in ("indices.npy", "weights.npy", "distances.npy"):
        np.save(tmp_path / "g" / name, np.zeros((3, 1)))
    (tmp_path / "g" / "meta.json").write_text("{not json")
    with pytest.raises(GraphclustError, match="could not read graph folder"):
        KNNGraph.load(tmp_path / "g")


def test_npy_file_round_trip(tmp_path):
    path = tmp_path / "a.npy"
    with NpyFile.create(path, (10, 3), np.float32) as f:
        f.write(7, np.ones((3, 3)))
        f.write(0, np.arange(6).reshape(2, 3))
        np.testing.assert_array_equal(f.read(1, 3), [[3, 4, 5], [0, 0, 0]])
        with pytest.raises(GraphclustError, match="do not fit"):
            f.write(9, np.ones((2, 3)))
    arr = np.load(path)
    assert arr.dtype == np.float32 and arr[7:].sum() == 9 and arr[1, 2] == 5
    assert json.loads(json.dumps(arr.shape)) == [10, 3]

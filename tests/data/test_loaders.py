"""Tests for graphclust.data.loaders: names, files, validation, shared benchmarks, downloads."""

from __future__ import annotations

import dataclasses
import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from graphclust.data import download
from graphclust.data.download import RemoteFile
from graphclust.data.loaders import (
    DATA_DIR_ENV,
    available_datasets,
    default_data_dir,
    load_dataset,
)
from graphclust.utils import GraphclustError


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    """Tests must not see the user's data folder or mirror."""
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    monkeypatch.delenv(download.MIRROR_ENV, raising=False)


def _npz_bytes(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


# --------------------------------------------------------------------------- digits
def test_digits_shape_range_and_metadata():
    data = load_dataset("digits")
    assert data.X.shape == (1797, 64) and data.X.dtype == np.float32
    assert data.X.flags.c_contiguous
    assert data.X.min() == 0.0 and data.X.max() == 1.0  # 0..16 scaled by 1/16
    assert data.y.dtype == np.int64 and data.n_classes == 10
    assert data.image_shape == (8, 8) and data.likelihood == "bernoulli"
    assert data.source == "sklearn" and data.name == "digits"


def test_max_samples_is_a_prefix():
    full = load_dataset("digits")
    part = load_dataset("digits", max_samples=10)
    np.testing.assert_array_equal(part.X, full.X[:10])
    np.testing.assert_array_equal(part.y, full.y[:10])
    assert load_dataset("digits", max_samples=10**6).n_samples == 1797


@pytest.mark.parametrize("bad", [0, 1, -3, 2.5, "10", True])
def test_bad_max_samples(bad):
    with pytest.raises(GraphclustError, match="max_samples"):
        load_dataset("digits", max_samples=bad)


def test_available_datasets_and_default_dir(monkeypatch, tmp_path):
    names = available_datasets()
    assert {"digits", "mnist", "20news", "coil20", "reuters10k", "har"} <= set(names)
    assert all(isinstance(v, str) and v for v in names.values())
    assert default_data_dir() == Path.home() / ".cache" / "graphclust"
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    assert default_data_dir() == tmp_path


# --------------------------------------------------------------------------- round trips
def test_npz_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(6, 4))
    y = np.array([0, 1, 1, 2, 0, 2])
    path = tmp_path / "toy.npz"
    np.savez(path, X=X, y=y, shape=np.array([2, 2]))

    data = load_dataset(path)

    np.testing.assert_array_equal(data.X, X.astype(np.float32))
    assert data.y.tolist() == y.tolist() and data.y.dtype == np.int64
    assert data.image_shape == (2, 2) and data.likelihood == "gaussian"
    assert data.name == "toy" and data.source == str(path)
    assert (data.n_samples, data.n_features, data.n_classes) == (6, 4, 3)


def test_npz_without_labels(tmp_path):
    path = tmp_path / "nolabels.npz"
    np.savez_compressed(path, X=np.eye(3))
    data = load_dataset(str(path))
    assert data.y is None and data.n_classes is None and data.likelihood == "bernoulli"


def test_npy_with_labels_from_npy_and_txt(tmp_path):
    X = np.arange(8, dtype=np.float64).reshape(4, 2)
    np.save(tmp_path / "x.npy", X)
    np.save(tmp_path / "y.npy", np.array([1, 0, 1, 0]))
    (tmp_path / "y.txt").write_text("cat\ndog\ncat\nbird\n")

    from_npy = load_dataset(tmp_path / "x.npy", labels=tmp_path / "y.npy")
    from_txt = load_dataset(tmp_path / "x.npy", labels=str(tmp_path / "y.txt"))

    np.testing.assert_array_equal(from_npy.X, X.astype(np.float32))
    assert from_npy.y.tolist() == [1, 0, 1, 0] and from_npy.y.dtype == np.int64
    assert from_txt.y.tolist() == [1, 2, 1, 0]  # bird, cat, dog in sorted order
    assert load_dataset(tmp_path / "x.npy").y is None


def test_labels_array_overrides_and_may_match_prefix(tmp_path):
    np.savez(tmp_path / "a.npz", X=np.ones((5, 2)), y=np.zeros(5, dtype=int))
    data = load_dataset(tmp_path / "a.npz", labels=[4, 3, 2, 1, 0], max_samples=3)
    assert data.y.tolist() == [4, 3, 2]
    data = load_dataset(tmp_path / "a.npz", labels=[7, 8, 9], max_samples=3)
    assert data.y.tolist() == [7, 8, 9]


def test_csv_with_header_and_named_label_column(tmp_path):
    path = tmp_path / "pets.csv"
    path.write_text("a,label,b\n0.5,cat,1\n1.5,dog,2\n2.5,cat,3\n")
    data = load_dataset(path, label_column="label")
    np.testing.assert_array_equal(data.X, [[0.5, 1], [1.5, 2], [2.5, 3]])
    assert data.y.tolist() == [0, 1, 0] and data.name == "pets"


def test_csv_without_header_last_column_labels(tmp_path):
    path = tmp_path / "plain.csv"
    path.write_text("1,2,0\n3,4,1\n\n5,6,1\n")  # a blank line is skipped
    data = load_dataset(path, label_column=-1)
    np.testing.assert_array_equal(data.X, [[1, 2], [3, 4], [5, 6]])
    assert data.y.tolist() == [0, 1, 1]
    assert load_dataset(path).X.shape == (3, 3)  # no label column: all features


# --------------------------------------------------------------------------- bad inputs
def _write(tmp_path: Path, kind: str) -> Path:
    """One bad input file per kind."""
    if kind == "nan":
        X = np.ones((4, 3))
        X[2, 1] = np.nan
        np.savez(tmp_path / "nan.npz", X=X)
        return tmp_path / "nan.npz"
    if kind == "inf_csv":
        (tmp_path / "inf.csv").write_text("1,2\n3,inf\n")
        return tmp_path / "inf.csv"
    if kind == "1d":
        np.save(tmp_path / "flat.npy", np.arange(5.0))
        return tmp_path / "flat.npy"
    if kind == "3d":
        np.savez(tmp_path / "cube.npz", X=np.zeros((4, 2, 2)))
        return tmp_path / "cube.npz"
    if kind == "one_sample":
        np.save(tmp_path / "one.npy", np.zeros((1, 3)))
        return tmp_path / "one.npy"
    if kind == "empty_csv":
        (tmp_path / "empty.csv").write_text("")
        return tmp_path / "empty.csv"
    if kind == "header_only_csv":
        (tmp_path / "head.csv").write_text("a,b,c\n")
        return tmp_path / "head.csv"
    if kind == "text_in_csv":
        (tmp_path / "text.csv").write_text("1,2\n3,abc\n")
        return tmp_path / "text.csv"
    if kind == "random_npz":
        (tmp_path / "random.npz").write_bytes(np.random.default_rng(1).bytes(2000))
        return tmp_path / "random.npz"
    if kind == "truncated_npz":
        good = _npz_bytes(X=np.random.default_rng(2).normal(size=(50, 20)))
        (tmp_path / "trunc.npz").write_bytes(good[: len(good) // 2])
        return tmp_path / "trunc.npz"
    if kind == "missing_X":
        np.savez(tmp_path / "noX.npz", features=np.ones((3, 2)), y=np.arange(3))
        return tmp_path / "noX.npz"
    if kind == "wrong_labels":
        np.savez(tmp_path / "wl.npz", X=np.ones((4, 2)), y=np.arange(3))
        return tmp_path / "wl.npz"
    if kind == "bad_shape":
        np.savez(tmp_path / "bs.npz", X=np.ones((4, 6)), shape=np.array([2, 2]))
        return tmp_path / "bs.npz"
    raise AssertionError(kind)


@pytest.mark.parametrize(
    ("kind", "fact"),
    [
        ("nan", r"1 NaN/inf value.*first bad row: 2"),
        ("inf_csv", r"NaN/inf.*first bad row: 1"),
        ("1d", r"must be 2-D.*\(5,\)"),
        ("3d", r"must be 2-D.*\(4, 2, 2\)"),
        ("one_sample", r"1 sample\(s\); at least 2"),
        ("empty_csv", r"empty\.csv is empty"),
        ("header_only_csv", r"header row but no data rows"),
        ("text_in_csv", r"row 2, feature column 2 holds 'abc'"),
        ("random_npz", r"random\.npz is not a valid \.npz file.*download it again"),
        ("truncated_npz", r"trunc\.npz is not a valid \.npz file.*truncated"),
        ("missing_X", r"no array named 'X'; arrays present: \['features', 'y'\]"),
        ("wrong_labels", r"3 entries but X has 4 rows"),
        ("bad_shape", r"image shape \(2, 2\) has 4 pixels but X has 6 features"),
    ],
)
def test_bad_input_raises_with_the_key_fact(tmp_path, kind, fact):
    with pytest.raises(GraphclustError, match=fact):
        load_dataset(_write(tmp_path, kind))


def test_labels_of_wrong_length(tmp_path):
    np.save(tmp_path / "x.npy", np.ones((4, 2)))
    with pytest.raises(GraphclustError, match="labels has 2 entries but X has 4 rows"):
        load_dataset(tmp_path / "x.npy", labels=[0, 1])


def test_unknown_name_lists_names_and_mentions_paths():
    with pytest.raises(GraphclustError) as info:
        load_dataset("mnits")
    msg = str(info.value)
    assert "mnist" in msg and "reuters10k" in msg and "path" in msg


@pytest.mark.parametrize(
    ("source", "fact"),
    [("nowhere/data.npz", "not found"), ("data.parquet", "neither a known data set")],
)
def test_missing_or_unsupported_paths(tmp_path, monkeypatch, source, fact):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(GraphclustError, match=fact):
        load_dataset(source)
    (tmp_path / "data.txt").write_text("1 2\n")
    with pytest.raises(GraphclustError, match="unsupported file type '.txt'"):
        load_dataset("data.txt")


def test_label_column_needs_csv_and_an_existing_column(tmp_path):
    with pytest.raises(GraphclustError, match="label_column applies to .csv"):
        load_dataset("digits", label_column=-1)
    path = tmp_path / "h.csv"
    path.write_text("a,b\n1,2\n3,4\n")
    with pytest.raises(GraphclustError, match=r"no column named 'label' \(columns: \['a', 'b'\]\)"):
        load_dataset(path, label_column="label")
    with pytest.raises(GraphclustError, match="out of range"):
        load_dataset(path, label_column=5)


def test_missing_benchmark_names_file_folder_and_remedies(tmp_path):
    with pytest.raises(GraphclustError) as info:
        load_dataset("coil20", data_dir=tmp_path)
    msg = str(info.value)
    for fact in ("coil20.npz", str(tmp_path), "download=True", "--data-dir", DATA_DIR_ENV):
        assert fact in msg


def test_benchmark_found_through_env_var(tmp_path, monkeypatch):
    images = np.arange(2 * 784, dtype=np.uint8).reshape(2, 784)
    np.savez(tmp_path / "mnist.npz", X=images, y=np.array([3, 7]))
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))

    data = load_dataset("MNIST")

    np.testing.assert_array_equal(data.X, images.astype(np.float32) / 255)
    assert data.image_shape == (28, 28) and data.y.tolist() == [3, 7]


# --------------------------------------------------------------------------- shared data
@pytest.mark.shared_data
def test_shared_mnist(shared_data_dir):
    data = load_dataset("mnist", data_dir=shared_data_dir)
    assert data.X.shape == (70000, 784) and data.X.dtype == np.float32
    assert data.X.min() == 0.0 and data.X.max() == 1.0 and data.likelihood == "bernoulli"
    assert data.image_shape == (28, 28)
    assert data.y[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert np.bincount(data.y[:60000]).tolist() == [
        5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949
    ]
    assert np.bincount(data.y[60000:]).tolist() == [
        980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009
    ]
    train = data.X[:60000]
    assert abs(float(train.mean(dtype=np.float64)) - 0.1307) < 5e-5
    assert abs(float(train.std(dtype=np.float64)) - 0.3081) < 5e-5


@pytest.mark.shared_data
def test_shared_coil20(shared_data_dir):
    data = load_dataset("coil20", data_dir=shared_data_dir)
    assert data.X.shape == (1440, 1024) and data.image_shape == (32, 32)
    assert np.bincount(data.y).tolist() == [72] * 20
    assert abs(float(data.X.mean(dtype=np.float64)) - 0.3016) < 5e-5


@pytest.mark.shared_data
def test_shared_20news_and_alias(shared_data_dir):
    data = load_dataset("20news", data_dir=shared_data_dir)
    assert data.X.shape == (18846, 2000) and data.image_shape is None
    assert np.bincount(data.y).tolist() == [
        799, 973, 985, 982, 963, 988, 975, 990, 996, 994,
        999, 991, 984, 990, 987, 997, 910, 940, 775, 628,
    ]
    norms = np.linalg.norm(data.X[:100], axis=1)
    np.testing.assert_allclose(norms, 1.0, rtol=1e-5)  # rows are L2-normalised
    alias = load_dataset("20news_tfidf2000", data_dir=shared_data_dir, max_samples=5)
    np.testing.assert_array_equal(alias.X, data.X[:5])


# --------------------------------------------------------------------------- downloads
def test_reuters_like_mat_is_downloaded_converted_and_cached(
    local_http_server, tmp_path, monkeypatch
):
    rng = np.random.default_rng(3)
    X = rng.random((12, 5))
    Y = np.array([0, 1, 2, 3] * 3)
    buf = io.BytesIO()
    scipy.io.savemat(buf, {"X": X, "Y": Y[:, None]})
    body = buf.getvalue()
    url = local_http_server.add("/reuters10k.mat", body)
    entry = download.REGISTRY["reuters10k"]
    patched = dataclasses.replace(
        entry, upstream=RemoteFile(url, hashlib.sha256(body).hexdigest(), "reuters10k.mat")
    )
    monkeypatch.setitem(download.REGISTRY, "reuters10k", patched)

    data = load_dataset("reuters10k", data_dir=tmp_path, download=True)

    np.testing.assert_allclose(data.X, X.astype(np.float32))
    assert data.y.tolist() == Y.tolist() and data.n_classes == 4 and data.name == "reuters10k"
    assert (tmp_path / "reuters10k.npz").is_file()
    assert (tmp_path / "raw" / "reuters10k.mat").read_bytes() == body
    again = load_dataset("reuters10k", data_dir=tmp_path)  # from the cache, no request
    np.testing.assert_array_equal(again.X, data.X)
    assert local_http_server.hits["/reuters10k.mat"] == 1


def test_har_like_mat_without_checksum_warns(local_http_server, tmp_path, monkeypatch):
    buf = io.BytesIO()
    scipy.io.savemat(buf, {"X": np.eye(6), "Y": np.arange(1, 7)[:, None]})  # 1-based labels
    url = local_http_server.add("/HAR.mat", buf.getvalue())
    patched = dataclasses.replace(
        download.REGISTRY["har"], upstream=RemoteFile(url, None, "HAR.mat")
    )
    monkeypatch.setitem(download.REGISTRY, "har", patched)

    with pytest.warns(download.UnverifiedDownloadWarning, match="could not be verified"):
        data = load_dataset("har", data_dir=tmp_path, download=True)

    assert data.y.tolist() == [0, 1, 2, 3, 4, 5]
    assert (tmp_path / "raw" / "HAR.mat.sha256").is_file()


def test_wrong_checksum_download_leaves_no_cache(local_http_server, tmp_path, monkeypatch):
    url = local_http_server.add("/reuters10k.mat", b"not the file")
    patched = dataclasses.replace(
        download.REGISTRY["reuters10k"], upstream=RemoteFile(url, "1" * 64, "reuters10k.mat")
    )
    monkeypatch.setitem(download.REGISTRY, "reuters10k", patched)
    with pytest.raises(GraphclustError, match="checksum mismatch"):
        load_dataset("reuters10k", data_dir=tmp_path, download=True)
    assert not (tmp_path / "reuters10k.npz").exists()
    assert list((tmp_path / "raw").iterdir()) == []


def test_mnist_downloads_from_mirror(local_http_server, tmp_path, monkeypatch):
    images = np.full((3, 784), 255, dtype=np.uint8)
    body = _npz_bytes(X=images, y=np.array([1, 2, 3]))
    local_http_server.add("/mirror/mnist.npz", body)
    monkeypatch.setenv(download.MIRROR_ENV, local_http_server.base_url + "/mirror/")
    patched = dataclasses.replace(
        download.REGISTRY["mnist"], npz_sha256=hashlib.sha256(body).hexdigest()
    )
    monkeypatch.setitem(download.REGISTRY, "mnist", patched)

    data = load_dataset("mnist", data_dir=tmp_path / "cache", download=True)

    assert data.X.shape == (3, 784) and data.X.max() == 1.0 and data.image_shape == (28, 28)
    assert (tmp_path / "cache" / "mnist.npz").read_bytes() == body


def test_mnist_download_without_mirror_explains(tmp_path):
    with pytest.raises(GraphclustError, match="rasbt/mnist-pngs.*GRAPHCLUST_DATA_URL"):
        load_dataset("mnist", data_dir=tmp_path, download=True)

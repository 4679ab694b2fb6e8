"""Tests for graphclust.data.download: verified, retried, atomic downloads and .mat converters."""

from __future__ import annotations

import hashlib
import socket

import numpy as np
import pytest
import scipy.io
import scipy.sparse

from graphclust.data import download
from graphclust.data.download import UnverifiedDownloadWarning, fetch
from graphclust.utils import GraphclustError

BODY = bytes(range(256)) * 400  # 102,400 bytes, several chunks
BODY_SHA = hashlib.sha256(BODY).hexdigest()
FAST = dict(timeout=5, progress=False, backoff=0)


def test_correct_hash_places_file_and_reuses_it(local_http_server, tmp_path):
    url = local_http_server.add("/data.bin", BODY)
    dest = tmp_path / "sub" / "data.bin"

    out = fetch(url, BODY_SHA, dest, **FAST)

    assert out == dest and dest.read_bytes() == BODY
    assert sorted(p.name for p in dest.parent.iterdir()) == ["data.bin"]  # no temp files
    # a second call finds the verified file and does not download again
    assert fetch(url, BODY_SHA, dest, **FAST) == dest
    assert local_http_server.hits["/data.bin"] == 1


def test_sha256_prefix_and_upper_case_are_accepted(local_http_server, tmp_path):
    url = local_http_server.add("/data.bin", BODY)
    out = fetch(url, "sha256:" + BODY_SHA.upper(), tmp_path / "data.bin", **FAST)
    assert out.read_bytes() == BODY


def test_wrong_hash_raises_and_leaves_nothing(local_http_server, tmp_path):
    url = local_http_server.add("/data.bin", BODY)
    wrong = "0" * 64

    with pytest.raises(GraphclustError) as info:
        fetch(url, wrong, tmp_path / "data.bin", retries=2, **FAST)

    msg = str(info.value)
    assert wrong in msg and BODY_SHA in msg and "deleted" in msg
    assert list(tmp_path.iterdir()) == []  # neither the file nor a temporary
    assert local_http_server.hits["/data.bin"] == 1  # a checksum mismatch is not retried


def test_existing_file_with_wrong_hash_is_replaced(local_http_server, tmp_path):
    url = local_http_server.add("/data.bin", BODY)
    dest = tmp_path / "data.bin"
    dest.write_bytes(b"stale")
    fetch(url, BODY_SHA, dest, **FAST)
    assert dest.read_bytes() == BODY


def test_dropped_connection_is_retried(local_http_server, tmp_path):
    url = local_http_server.add("/data.bin", BODY, drop_first=1)
    dest = tmp_path / "data.bin"

    out = fetch(url, BODY_SHA, dest, retries=2, **FAST)

    assert out.read_bytes() == BODY
    assert local_http_server.hits["/data.bin"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["data.bin"]


def test_always_dropping_fails_after_retries_without_partial_file(local_http_server, tmp_path):
    url = local_http_server.add("/data.bin", BODY, drop_first=10**6)

    with pytest.raises(GraphclustError) as info:
        fetch(url, BODY_SHA, tmp_path / "data.bin", retries=2, **FAST)

    msg = str(info.value)
    assert "after 3 attempt(s)" in msg and url in msg and "IncompleteRead" in msg
    assert local_http_server.hits["/data.bin"] == 3
    assert list(tmp_path.iterdir()) == []


def test_http_404_is_reported_without_retrying(local_http_server, tmp_path):
    url = local_http_server.base_url + "/missing.bin"
    with pytest.raises(GraphclustError, match="HTTP 404"):
        fetch(url, BODY_SHA, tmp_path / "missing.bin", retries=3, **FAST)
    assert local_http_server.hits["/missing.bin"] == 1
    assert list(tmp_path.iterdir()) == []


def test_server_error_is_retried(local_http_server, tmp_path):
    url = local_http_server.add("/busy.bin", BODY, status=503)
    with pytest.raises(GraphclustError, match="after 2 attempt"):
        fetch(url, BODY_SHA, tmp_path / "busy.bin", retries=1, **FAST)
    assert local_http_server.hits["/busy.bin"] == 2


def test_connection_refused_fails_after_retries(tmp_path, monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    with socket.socket() as sock:  # a port on which nothing listens
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(GraphclustError, match="after 2 attempt.*ConnectionError"):
        fetch(f"http://127.0.0.1:{port}/x.bin", BODY_SHA, tmp_path / "x.bin", retries=1, **FAST)
    assert list(tmp_path.iterdir()) == []


def test_unknown_hash_downloads_warns_and_records_sha256(local_http_server, tmp_path):
    url = local_http_server.add("/data.bin", BODY)
    dest = tmp_path / "data.bin"

    with pytest.warns(UnverifiedDownloadWarning, match=BODY_SHA):
        fetch(url, None, dest, **FAST)

    assert dest.read_bytes() == BODY
    assert (tmp_path / "data.bin.sha256").read_text() == f"{BODY_SHA}  data.bin\n"


@pytest.mark.parametrize("bad", ["abc", "g" * 64, "0" * 63])
def test_malformed_sha256_is_rejected(bad, tmp_path):
    with pytest.raises(GraphclustError, match="64 hexadecimal"):
        fetch("http://127.0.0.1:9/x", bad, tmp_path / "x", **FAST)


# --------------------------------------------------------------------------- converters
def test_mat_to_arrays_reads_reuters_layout(tmp_path):
    X = np.arange(12, dtype=np.float64).reshape(4, 3) / 12
    path = tmp_path / "r.mat"
    scipy.io.savemat(path, {"X": X, "Y": np.array([[3], [1], [3], [2]])})

    arrays = download.mat_to_arrays(path)

    assert arrays["X"].dtype == np.float32 and arrays["X"].shape == (4, 3)
    np.testing.assert_allclose(arrays["X"], X, rtol=1e-7)
    assert arrays["y"].tolist() == [2, 0, 2, 1]  # 1-based MATLAB labels -> 0 .. k-1


def test_mat_to_arrays_transposes_columns_and_densifies_sparse(tmp_path):
    X = np.array([[1.0, 0.0, 2.0], [0.0, 3.0, 0.0]])  # 2 features x 3 samples
    path = tmp_path / "fea.mat"
    scipy.io.savemat(path, {"fea": scipy.sparse.csc_matrix(X), "gnd": np.array([1, 2, 2])})

    arrays = download.mat_to_arrays(path)

    np.testing.assert_array_equal(arrays["X"], X.T)
    assert arrays["y"].tolist() == [0, 1, 1]


def test_mat_to_arrays_without_features_lists_variables(tmp_path):
    path = tmp_path / "odd.mat"
    scipy.io.savemat(path, {"images": np.zeros((2, 2)), "Y": np.array([1, 2])})
    with pytest.raises(GraphclustError, match=r"no feature matrix.*\['Y', 'images'\]"):
        download.mat_to_arrays(path)


def test_mat_to_arrays_rejects_lfs_pointer_and_garbage(tmp_path):
    pointer = tmp_path / "lfs.mat"
    pointer.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:00\nsize 9\n")
    with pytest.raises(GraphclustError, match="Git LFS pointer"):
        download.mat_to_arrays(pointer)
    garbage = tmp_path / "garbage.mat"
    garbage.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(GraphclustError, match="not a readable MATLAB"):
        download.mat_to_arrays(garbage)


def test_convert_coil20_makes_images_upright(tmp_path):
    # image k has pixel (r, c) = 100 * k + r; MATLAB stores it column by column
    images = np.stack([np.add.outer(100.0 * k + np.arange(32.0), np.zeros(32)) for k in (1, 2)])
    fea = images.transpose(0, 2, 1).reshape(2, 1024)  # column-major flattening
    path = tmp_path / "COIL20.mat"
    scipy.io.savemat(path, {"fea": fea, "gnd": np.array([[1], [2]])})

    arrays = download.convert_coil20(path)

    np.testing.assert_array_equal(arrays["X"].reshape(2, 32, 32), images)
    assert arrays["shape"].tolist() == [32, 32] and arrays["y"].tolist() == [0, 1]


# --------------------------------------------------------------------------- registry
def test_registry_pins_readme_sources_and_checksums():
    reg = download.REGISTRY
    assert set(reg) == {"mnist", "20news", "coil20", "reuters10k", "har"}
    assert reg["mnist"].npz_sha256.startswith("409118ef")
    assert reg["20news"].npz_sha256.startswith("d47aff7b")
    assert reg["coil20"].npz_sha256.startswith("f2b91d09")
    assert reg["coil20"].upstream.sha256.startswith("2a35c105")
    assert reg["reuters10k"].upstream.sha256 == (
        "aa0774a824889efe0597f0d42c6a795c99f312f89819afde957746fb7f0588b1"
    )
    assert reg["har"].upstream.sha256 is None  # unknown: never invented
    for name in ("reuters10k", "har"):
        assert "slim1017/VaDE/eca52b4b57e32a68f578de7a54eda5d39907b0fe/" in reg[name].upstream.url
    assert "4aa83542b8832c2b4586a53aee2c351bc8faf5c0/Data/COIL20.mat" in reg["coil20"].upstream.url


def test_fetch_dataset_without_source_explains_mirror(tmp_path, monkeypatch):
    monkeypatch.delenv(download.MIRROR_ENV, raising=False)
    with pytest.raises(GraphclustError, match="GRAPHCLUST_DATA_URL.*shared/data"):
        download.fetch_dataset("20news", tmp_path)

import json

import numpy as np
import pytest

from graphclust.cli import main
from graphclust.graph.graph import KNNGraph, data_fingerprint
from graphclust.graph.knn import knn_torch
from graphclust.metrics import neighbor_purity


def blobs(tmp_path, n=60, nan=False):
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], n // 3)
    X = (rng.normal(size=(n, 5)) + 10 * y[:, None]).astype(np.float32)
    if nan:
        X[3, 2] = np.nan
    path = tmp_path / "blobs.npz"
    np.savez(path, X=X, y=y)
    return path, X, y


def test_build_graph_raw_matches_reference(tmp_path, capsys):
    path, X, y = blobs(tmp_path)
    out = tmp_path / "g.npz"
    rc = main(["build-graph", str(path), "--embedder", "none", "--k", "5",
               "--kernel", "uniform", "--method", "torch", "-o", str(out), "-q"])
    assert rc == 0
    g = KNNGraph.load(out)
    ref = knn_torch(X, 5)
    np.testing.assert_array_equal(g.indices, ref.indices)
    np.testing.assert_allclose(g.weights, 0.2)
    assert g.meta["data_fingerprint"] == data_fingerprint(X)
    np.testing.assert_array_equal(g.labels, y)
    cfg = json.loads((tmp_path / "g.config.json").read_text())
    assert cfg["args"]["k"] == 5 and cfg["data"]["shape"] == [60, 5]
    assert cfg["summary"]["purity"]["5"] == pytest.approx(neighbor_purity(ref.indices, y, 5))
    text = capsys.readouterr().out
    assert "n=60, k=5" in text and "purity" in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blobs.npz", "g.config.json", "g.npz"]


def test_build_graph_siamese_writes_embedder(tmp_path):
    path, X, y = blobs(tmp_path)
    out = tmp_path / "s.npz"
    rc = main(["build-graph", str(path), "--k", "4", "--method", "torch", "--siamese-epochs", "2",
               "--siamese-neighbors", "3", "-o", str(out), "-q"])
    assert rc == 0
    assert (tmp_path / "s.siamese.safetensors").is_file()
    g = KNNGraph.load(out)
    assert g.meta["embedder"] == "siamese" and g.k == 4
    np.testing.assert_allclose(g.weights.sum(1), 1.0, rtol=1e-5)
    # mutual-neighbour positives: recorded in the config, and a different embedding
    out2 = tmp_path / "m.npz"
    assert main(["build-graph", str(path), "--k", "4", "--method", "torch", "--siamese-epochs",
                 "2", "--siamese-neighbors", "3", "--siamese-mutual", "-o", str(out2), "-q"]) == 0
    config = json.loads((tmp_path / "m.config.json").read_text())
    assert config["args"]["siamese_mutual"] is True
    assert json.loads((tmp_path / "s.config.json").read_text())["args"]["siamese_mutual"] is False
    assert not np.array_equal(KNNGraph.load(out2).distances, g.distances)
    # augmented pairs (masking and noise for non-image rows): recorded, and another embedding
    out3 = tmp_path / "a.npz"
    assert main(["build-graph", str(path), "--k", "4", "--method", "torch", "--siamese-epochs",
                 "2", "--siamese-neighbors", "3", "--siamese-augment", "-o", str(out3), "-q"]) == 0
    assert json.loads((tmp_path / "a.config.json").read_text())["args"]["siamese_augment"] is True
    assert not np.array_equal(KNNGraph.load(out3).distances, g.distances)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--k", "60"], "k=60"),
        (["--k", "0"], "k must be >= 1"),
    ],
)
def test_build_graph_bad_k(tmp_path, capsys, extra, message):
    path, _, _ = blobs(tmp_path)
    out = tmp_path / "g.npz"
    rc = main(["build-graph", str(path), "--embedder", "none", "-o", str(out), "-q", *extra])
    assert rc == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_build_graph_refuses_overwrite_and_bad_outputs(tmp_path, capsys):
    path, _, _ = blobs(tmp_path)
    out = tmp_path / "g.npz"
    args = ["build-graph", str(path), "--embedder", "none", "--k", "3", "--method", "torch", "-q"]
    assert main([*args, "-o", str(out)]) == 0
    before = out.read_bytes()
    assert main([*args, "-o", str(out)]) == 2
    assert "--force" in capsys.readouterr().err
    assert out.read_bytes() == before
    assert main([*args, "--kernel", "heat", "-o", str(out), "--force"]) == 0
    assert KNNGraph.load(out).meta["kernel"] == "heat"
    assert main([*args, "-o", str(tmp_path / "missing" / "g.npz")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main([*args, "-o", str(tmp_path / "g.txt")]) == 2
    assert ".npz" in capsys.readouterr().err


def test_build_graph_bad_data(tmp_path, capsys):
    path, _, _ = blobs(tmp_path, nan=True)
    out = tmp_path / "g.npz"
    assert main(["build-graph", str(path), "--embedder", "none", "-o", str(out), "-q"]) == 2
    assert "NaN" in capsys.readouterr().err
    assert main(["build-graph", "no-such-dataset", "-o", str(out), "-q"]) == 2
    assert "no-such-dataset" in capsys.readouterr().err
    assert not out.exists()


def test_build_graph_failure_leaves_nothing(tmp_path, monkeypatch):
    path, _, _ = blobs(tmp_path)
    out = tmp_path / "g.npz"
    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr("graphclust.commands.build_graph.write_json", boom)
    with pytest.raises(OSError):
        main(["build-graph", str(path), "--embedder", "none", "--k", "3", "--method", "torch",
              "-o", str(out), "-q"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blobs.npz"]


def test_build_graph_chunked_npy(tmp_path, capsys):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(500, 8)).astype(np.float32)
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", np.arange(500) % 4)
    out = tmp_path / "gdir"
    args = ["build-graph", str(tmp_path / "X.npy"), "--chunked", "--k", "4", "--chunk-size", "77",
            "--nprobe", "64", "--labels", str(tmp_path / "y.npy"), "-o", str(out), "-q"]
    assert main(args) == 0
    g = KNNGraph.load(out, mmap=True)
    assert isinstance(g.indices, np.memmap)
    np.testing.assert_array_equal(g.indices, knn_torch(X, 4).indices)  # nprobe >= nlist: exact
    np.testing.assert_array_equal(g.labels, np.arange(500) % 4)
    assert g.meta["embedder"] == "none" and g.meta["data_fingerprint"] == data_fingerprint(X)
    cfg = json.loads((tmp_path / "gdir.config.json").read_text())
    assert cfg["args"]["chunked"] and cfg["index"]["chunk_size"] == 77
    assert "n=500, k=4" in capsys.readouterr().out
    before = (out / "indices.npy").read_bytes()
    assert main(args) == 2  # refuses to overwrite
    assert "--force" in capsys.readouterr().err
    assert (out / "indices.npy").read_bytes() == before
    assert main([*args, "--index", "ivfpq", "--force"]) == 0
    assert KNNGraph.load(out).meta["index"]["kind"] == "ivfpq"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["X.npy", "gdir", "gdir.config.json", "y.npy"]


def test_build_graph_chunked_errors(tmp_path, capsys):
    X = np.random.default_rng(0).normal(size=(100, 4)).astype(np.float32)
    X[90, 1] = np.nan
    np.save(tmp_path / "X.npy", X)
    base = ["build-graph", str(tmp_path / "X.npy"), "--chunked", "--k", "3", "-q"]
    assert main([*base, "--chunk-size", "30", "-o", str(tmp_path / "g")]) == 2
    assert "first bad row: 90" in capsys.readouterr().err
    assert main([*base, "--embedder", "siamese", "-o", str(tmp_path / "g")]) == 2
    assert "Siamese" in capsys.readouterr().err
    assert main([*base, "-o", str(tmp_path / "g.npz")]) == 2
    assert "folder" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["X.npy"]

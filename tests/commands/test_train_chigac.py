"""``graphclust train-chigac`` / ``cluster-chigac``: run folders, overwrite rules, exact resume."""

import json

import numpy as np
import pytest
from safetensors.torch import load_file

from graphclust.cli import main
from graphclust.graph.graph import build_knn_graph, data_fingerprint
from graphclust.inspect.inputs import load_inspection_input

TINY = ["--width", "8", "--heads", "2", "--layers", "1", "--tokens", "1", "--latent-dim", "4",
        "--hidden", "8", "--z-samples", "2", "--n-min", "20", "--n-max", "30",
        "--n-neighbors", "4", "--batch-size", "2", "--max-train-clusters", "4",
        "--val-sets", "2", "--val-n", "30", "--device", "cpu", "-q"]


def train(out, steps, *extra):
    return main(["train-chigac", "-o", str(out), "--steps", str(steps), *TINY, *extra])


def blobs_file(tmp_path, labels=True):
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 20)
    X = (np.array([[-20, 0], [20, 0], [0, 20]])[y] + 0.5 * rng.normal(size=(60, 2)))
    path = tmp_path / "blobs.npz"
    np.savez(path, **({"X": X.astype(np.float32), "y": y} if labels else {"X": X}))
    return path, X.astype(np.float32), y


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("chigac") / "run"
    assert train(out, 3) == 0
    return out


def test_train_writes_a_complete_run_folder(run_dir):
    cfg = json.loads((run_dir / "config.json").read_text())
    assert cfg["command"] == "train-chigac" and cfg["episodes"]["kind"] == "mixture"
    assert cfg["settings"]["lr_drop_step"] == 1  # resolved: half of --steps
    log = [json.loads(x) for x in (run_dir / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3]
    assert {"loss", "membership", "anchor_kl", "lr", "seconds"} <= set(log[0])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["steps"] == 3 and metrics["validation"]["n_sets"] == 2
    assert 0.0 <= metrics["validation"]["exact_k"] <= 1.0
    assert (run_dir / "checkpoints" / "chigac_checkpoint.pt").is_file()
    assert (run_dir / "checkpoints" / "model.safetensors").is_file()


def test_refuses_to_overwrite_without_force(tmp_path, capsys):
    out = tmp_path / "run"
    assert train(out, 1) == 0
    before = (out / "config.json").read_text()
    assert train(out, 1) == 2
    assert "--force" in capsys.readouterr().err
    assert (out / "config.json").read_text() == before
    assert train(out, 1, "--seed", "3", "--force") == 0
    assert json.loads((out / "config.json").read_text())["settings"]["seed"] == 3
    other = tmp_path / "precious"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    assert train(other, 1, "--force") == 2
    assert (other / "notes.txt").exists()


def test_resume_continues_identically(tmp_path, capsys):
    full, part = tmp_path / "full", tmp_path / "part"
    extra = ("--lr-drop-step", "3", "--checkpoint-every", "1", "--dropout", "0.2")
    assert train(full, 4, *extra) == 0
    assert train(part, 2, *extra) == 0
    assert train(part, 4, *extra, "--resume") == 0
    a = [json.loads(x)["loss"] for x in (full / "log.jsonl").read_text().splitlines()]
    b = [json.loads(x)["loss"] for x in (part / "log.jsonl").read_text().splitlines()]
    assert len(a) == 4 and a == b
    wa = load_file(str(full / "checkpoints" / "model.safetensors"))
    wb = load_file(str(part / "checkpoints" / "model.safetensors"))
    assert wa.keys() == wb.keys() and all((wa[k] == wb[k]).all() for k in wa)
    assert json.loads((part / "metrics.json").read_text())["resumed"] is True
    # other settings cannot be resumed
    assert train(part, 5, *extra, "--width", "16", "--resume") == 2
    assert "settings differ" in capsys.readouterr().err


def test_bad_arguments_fail_cleanly(tmp_path, capsys):
    assert main(["train-chigac", "-o", str(tmp_path / "a"), "--steps", "1", *TINY,
                 "--n-neighbors", "25"]) == 2
    assert "smaller than the smallest episode" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()
    path, _, _ = blobs_file(tmp_path, labels=False)
    assert main(["train-chigac", "-o", str(tmp_path / "b"), "--steps", "1", *TINY,
                 "--data", str(path)]) == 2
    assert "no labels" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


def test_train_on_labelled_episodes(tmp_path):
    path, _, _ = blobs_file(tmp_path)
    out = tmp_path / "meta"
    assert train(out, 1, "--data", str(path)) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["episodes"]["kind"] == "labelled" and cfg["data"]["n_samples"] == 60


def test_cluster_writes_the_run_folder_contract(tmp_path, run_dir):
    path, X, _ = blobs_file(tmp_path)
    out = tmp_path / "clustered"
    assert main(["cluster-chigac", str(path), "--model", str(run_dir), "-o", str(out), "-q",
                 "--device", "cpu"]) == 0
    labels = np.load(out / "labels.npy")
    assert labels.shape == (60,) and labels.dtype == np.int64
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_clusters"] == len(np.unique(labels)) and metrics["k_true"] == 3
    assert metrics["refine_steps"] == 8  # the default
    assert set(metrics["scores"]) == {"acc", "nmi", "ari"}
    assert np.load(out / "membership.npy").shape == (60,)
    report = load_inspection_input(out)  # `graphclust inspect` can read it
    assert report.kind == "run" and report.affinity.nnz > 0
    np.testing.assert_array_equal(report.clusters, labels)
    # the same result from a saved graph of the data, and from the model file itself
    graph = build_knn_graph(X, k=4, meta={"data_fingerprint": data_fingerprint(X)})
    graph.save(tmp_path / "g.npz")
    out2 = tmp_path / "clustered2"
    assert main(["cluster-chigac", str(path), "--model",
                 str(run_dir / "checkpoints" / "model.safetensors"), "-o", str(out2),
                 "--graph", str(tmp_path / "g.npz"), "-q", "--device", "cpu"]) == 0
    np.testing.assert_array_equal(np.load(out2 / "labels.npy"), labels)


def test_cluster_errors_leave_nothing_behind(tmp_path, run_dir, capsys):
    path, _, _ = blobs_file(tmp_path)
    out = tmp_path / "c"
    assert main(["cluster-chigac", str(path), "--model", str(tmp_path / "nope"), "-o",
                 str(out), "-q"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["cluster-chigac", str(path), "--model", str(run_dir), "-o", str(out), "-q",
                 "--max-clusters", "0"]) == 2
    assert "--max-clusters" in capsys.readouterr().err
    assert main(["cluster-chigac", str(path), "--model", str(run_dir), "-o", str(out), "-q",
                 "--refine-steps", "-1"]) == 2
    assert "--refine-steps must be >= 0" in capsys.readouterr().err
    for bad in ("0", "1.5", "-0.1"):
        assert main(["cluster-chigac", str(path), "--model", str(run_dir), "-o", str(out),
                     "-q", "--min-cluster-size", bad]) == 2
        assert "min_cluster_size must be an integer >= 1" in capsys.readouterr().err
    wide = tmp_path / "wide.npz"
    np.savez(wide, X=np.zeros((30, 3), dtype=np.float32))
    assert main(["cluster-chigac", str(wide), "--model", str(run_dir), "-o", str(out),
                 "-q"]) == 2
    assert "features" in capsys.readouterr().err
    assert not out.exists()
    assert main(["cluster-chigac", str(path), "--model", str(run_dir), "-o", str(out), "-q",
                 "--device", "cpu"]) == 0
    assert main(["cluster-chigac", str(path), "--model", str(run_dir), "-o", str(out), "-q",
                 "--device", "cpu"]) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["cluster-chigac", str(path), "--model", str(run_dir), "-o", str(out), "-q",
                 "--device", "cpu", "--force", "--max-clusters", "1"]) == 0
    assert json.loads((out / "metrics.json").read_text())["n_clusters"] == 1
    # a share of the points: every cluster under 60 * 0.9 = 54 points goes into the largest
    assert main(["cluster-chigac", str(path), "--model", str(run_dir), "-o", str(out), "-q",
                 "--device", "cpu", "--force", "--min-cluster-size", "0.9"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["min_cluster_size"] == 0.9
    assert metrics["n_clusters"] == 1 or metrics["n_merged"] == 0

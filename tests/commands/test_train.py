import json

import numpy as np
import pytest
import torch

from graphclust.cli import main
from graphclust.graph.graph import build_knn_graph, data_fingerprint
from graphclust.graph.knn import knn_torch
from graphclust.inspect.inputs import load_inspection_input

TINY = ["--hidden", "16", "--latent-dim", "2", "--pretrain-epochs", "10", "--batch-size", "32",
        "--n-neighbors", "5", "-q"]


def blobs(tmp_path, n=60, labels=True):
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], n // 3)
    X = (rng.normal(size=(n, 5)) * 0.5 + 8 * np.eye(3, 5)[y]).astype(np.float32)
    path = tmp_path / "blobs.npz"
    np.savez(path, **({"X": X, "y": y} if labels else {"X": X}))
    return path, X, y


@pytest.mark.parametrize("model", ["dgg", "vade"])
def test_train_writes_a_complete_run_folder(tmp_path, model):
    path, _, _ = blobs(tmp_path)
    out = tmp_path / "runs" / model
    rc = main(["train", str(path), "--model", model, "-o", str(out), "--epochs", "2", *TINY])
    assert rc == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["settings"]["model"] == model and cfg["settings"]["n_clusters"] == 3  # from labels
    labels = np.load(out / "labels.npy")
    assert labels.shape == (60,) and labels.dtype == np.int64
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["scores"]["acc"] == 1.0
    assert {"load", "pretrain_ae", "init", "head", "train"} <= set(metrics["stage_times"])
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2] and "acc" in log[0]
    ckpt = torch.load(out / "checkpoints" / "checkpoint.pt", weights_only=True)
    assert ckpt["epoch"] == 2
    assert (out / "checkpoints" / "model.safetensors").is_file()
    assert (out / "checkpoints" / "graph.npz").is_file() == (model == "dgg")
    # the run can be inspected: learned affinity on the graph recorded in config.json
    report = load_inspection_input(out)
    assert report.kind == "run" and report.affinity.nnz == 60 * 5
    np.testing.assert_array_equal(report.clusters, labels)
    assert cfg["graph"] == ("checkpoints/graph.npz" if model == "dgg"
                            else "checkpoints/latent_graph.npz")


def test_refuses_to_overwrite_without_force(tmp_path, capsys):
    path, _, _ = blobs(tmp_path)
    out = tmp_path / "run"
    assert main(["train", str(path), "-o", str(out), "--epochs", "1", *TINY]) == 0
    before = (out / "config.json").read_text()
    assert main(["train", str(path), "-o", str(out), "--epochs", "1", *TINY]) == 2
    assert "--force" in capsys.readouterr().err
    assert (out / "config.json").read_text() == before
    assert main(["train", str(path), "-o", str(out), "--epochs", "1", "--seed", "3", "--force",
                 *TINY]) == 0
    assert json.loads((out / "config.json").read_text())["settings"]["seed"] == 3
    # --force never deletes a folder that is not a run folder
    other = tmp_path / "precious"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    assert main(["train", str(path), "-o", str(other), "--force", *TINY]) == 2
    assert (other / "notes.txt").exists()


def test_resume_continues_to_the_uninterrupted_result(tmp_path, capsys):
    path, _, _ = blobs(tmp_path)
    full, part = tmp_path / "full", tmp_path / "part"
    assert main(["train", str(path), "-o", str(full), "--epochs", "3", *TINY]) == 0
    assert main(["train", str(path), "-o", str(part), "--epochs", "1", *TINY]) == 0
    assert main(["train", str(path), "-o", str(part), "--epochs", "3", "--resume", *TINY]) == 0
    np.testing.assert_array_equal(np.load(part / "labels.npy"), np.load(full / "labels.npy"))
    a = [json.loads(x)["loss"] for x in (full / "log.jsonl").read_text().splitlines()]
    b = [json.loads(x)["loss"] for x in (part / "log.jsonl").read_text().splitlines()]
    assert a == b
    assert json.loads((part / "metrics.json").read_text())["stage_times"]["pretrain_ae"]["cached"]
    assert json.loads((part / "config.json").read_text())["settings"]["grad_clip"] == 10.0
    # other settings cannot be resumed into the same folder
    assert main(["train", str(path), "-o", str(part), "--epochs", "3", "--resume", "--lr", "0.1",
                 *TINY]) == 2
    assert "settings differ" in capsys.readouterr().err


def test_given_graph_and_missing_cluster_count(tmp_path, capsys):
    path, X, _ = blobs(tmp_path)
    g = build_knn_graph(X, 5, knn=knn_torch(X, 5), meta={"data_fingerprint": data_fingerprint(X)})
    g.save(tmp_path / "g.npz")
    out = tmp_path / "with_graph"
    assert main(["train", str(path), "-o", str(out), "--graph", str(tmp_path / "g.npz"),
                 "--epochs", "1", *TINY]) == 0
    assert not (out / "checkpoints" / "graph.npz").exists()  # the given graph was used
    bad = build_knn_graph(X[:30], 5, knn=knn_torch(X[:30], 5))
    bad.save(tmp_path / "bad.npz")
    assert main(["train", str(path), "-o", str(tmp_path / "r2"), "--graph",
                 str(tmp_path / "bad.npz"), *TINY]) == 2
    assert "other data" in capsys.readouterr().err
    assert not (tmp_path / "r2").exists()  # nothing half-written
    nolab, _, _ = blobs(tmp_path, labels=False)
    assert main(["train", str(nolab), "-o", str(tmp_path / "r3"), *TINY]) == 2
    assert "--n-clusters" in capsys.readouterr().err
    assert main(["train", str(nolab), "-o", str(tmp_path / "r3"), "--n-clusters", "3",
                 "--epochs", "1", *TINY]) == 0
    assert "scores" not in json.loads((tmp_path / "r3" / "metrics.json").read_text())


# --------------------------------------------------------------------------- the other models
MORE = ["--latent-dim", "3", "--pretrain-epochs", "40", "--pair-hidden", "16", "--pair-epochs",
        "100", "--vimco-samples", "4"]


@pytest.mark.parametrize("model", ["gmvae", "kdvae", "kdae", "vcami", "aegmm"])
def test_other_models_write_a_complete_run_folder(tmp_path, model):
    path, _, _ = blobs(tmp_path)
    out = tmp_path / "runs" / model
    assert main(["train", str(path), "--model", model, "-o", str(out), "--epochs", "2",
                 *TINY, *MORE]) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model"] == model and cfg["settings"]["regularize"] is False
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["scores"]["acc"] == 1.0
    assert metrics["epochs"] == (0 if model == "aegmm" else 2)
    stages = {"load", "pretrain_ae", "init", "train"} | ({"head"} if model == "aegmm" else {"start"})
    assert stages <= set(metrics["stage_times"])
    assert (out / "checkpoints" / "model.safetensors").is_file()
    assert cfg["graph"] == "checkpoints/latent_graph.npz"  # inspection graph of the result
    report = load_inspection_input(out)
    np.testing.assert_array_equal(report.clusters, np.load(out / "labels.npy"))


@pytest.mark.parametrize("model", ["kdvae", "gmvae"])
def test_graph_file_trains_the_regulariser(tmp_path, model):
    path, X, _ = blobs(tmp_path)
    g = build_knn_graph(X, 5, knn=knn_torch(X, 5), meta={"data_fingerprint": data_fingerprint(X)})
    g.save(tmp_path / "g.npz")
    out = tmp_path / model
    assert main(["train", str(path), "--model", model, "-o", str(out), "--graph",
                 str(tmp_path / "g.npz"), "--graph-weight", "0.3", "--epochs", "2",
                 *TINY, *MORE]) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["graph"] == str((tmp_path / "g.npz").resolve())
    assert cfg["settings"]["graph_weight"] == 0.3
    assert json.loads((out / "metrics.json").read_text())["scores"]["acc"] == 1.0
    assert not (out / "checkpoints" / "graph.npz").exists()  # the given graph was used
    assert load_inspection_input(out).affinity.nnz == 60 * 5


def test_regularize_builds_a_graph_and_bad_flags(tmp_path, capsys):
    path, _, _ = blobs(tmp_path)
    out = tmp_path / "kdae"
    assert main(["train", str(path), "--model", "kdae", "-o", str(out), "--regularize",
                 "--epochs", "1", *TINY, *MORE]) == 0
    assert (out / "checkpoints" / "graph.npz").is_file()
    assert json.loads((out / "config.json").read_text())["graph"] == "checkpoints/graph.npz"
    for flags, message in [(["--model", "vade", "--regularize"], "--regularize applies"),
                           (["--model", "kdvae", "--graph-weight", "1"], "--graph-weight"),
                           (["--model", "gmvae", "--vimco-samples", "1"], "--vimco-samples"),
                           (["--model", "kdvae", "--pair-hidden", "a,b"], "--pair-hidden"),
                           (["--model", "kdvae", "--grad-clip", "5"], "--grad-clip applies"),
                           (["--model", "dgg", "--grad-clip", "1"], "--grad-clip must be"),
                           (["--model", "vade", "--grad-clip", "x"], "--grad-clip must be"),
                           (["--init", "umap", "--gmm-n-init", "0"], "--gmm-n-init must be"),
                           (["--init", "umap", "--umap-neighbors", "1"], "--umap-neighbors >= 2"),
                           (["--gmm-n-init", "10"], "not to the diagonal GMM"),
                           (["--label-weight", "5"], "needs --label-epochs"),
                           (["--label-epochs", "2", "--label-weight", "-1"],
                            "--label-weight must be")]:
        assert main(["train", str(path), "-o", str(tmp_path / "bad"), *flags, *TINY]) == 2
        assert message in capsys.readouterr().err
        assert not (tmp_path / "bad").exists()


def test_label_fitting_flags_reach_the_estimator_and_the_config(tmp_path):
    path, _, _ = blobs(tmp_path)
    out = tmp_path / "lw"
    assert main(["train", str(path), "--model", "dgg", "-o", str(out), "--epochs", "1",
                 "--label-epochs", "2", "--label-weight", "5", *TINY]) == 0
    settings = json.loads((out / "config.json").read_text())["settings"]
    assert (settings["label_epochs"], settings["label_weight"]) == (2, 5.0)
    assert json.loads((out / "metrics.json").read_text())["scores"]["acc"] == 1.0


def test_umap_start_flags_build_the_estimators_init():
    """``--umap-neighbors`` / ``--gmm-n-init`` reach the start; defaults keep the name."""
    from graphclust.commands.train import _init
    from graphclust.models.pretrain import UMAPGMMInit

    def init_of(*flags):
        import argparse

        from graphclust.commands.train import add_parser

        sub = argparse.ArgumentParser().add_subparsers()
        add_parser(sub)
        return _init(sub.choices["train"].parse_args(["data.npz", "-o", "out", *flags]))

    assert init_of() == "gmm" and init_of("--init", "umap-input") == "umap-input"
    init = init_of("--init", "umap-input", "--umap-neighbors", "5", "--gmm-n-init", "10")
    assert isinstance(init, UMAPGMMInit)
    assert (init.space, init.n_neighbors, init.n_init) == ("input", 5, 10)
    assert init_of("--init", "umap", "--gmm-n-init", "3").space == "latent"
    consensus = init_of("--init", "umap-input-consensus", "--umap-neighbors", "5")
    assert (consensus.space, consensus.n_neighbors) == ("input", (3, 4, 5))
    from graphclust.commands.train import INIT_CHOICES
    from graphclust.models.pretrain import INIT_NAMES

    assert INIT_CHOICES == INIT_NAMES  # spelled out in the CLI so the parser needs no torch


def test_multinomial_likelihood_on_word_counts(tmp_path, capsys):
    """``--likelihood multinomial`` trains on count data; bad combinations are refused."""
    from graphclust.commands.train import LIKELIHOOD_CHOICES
    from graphclust.nn.likelihood import LIKELIHOODS

    assert LIKELIHOOD_CHOICES == ("auto", *LIKELIHOODS)
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 20)
    topics = np.full((3, 15), 0.01)
    for k in range(3):
        topics[k, 5 * k: 5 * k + 5] = 1.0
    topics /= topics.sum(1, keepdims=True)
    X = np.stack([rng.multinomial(40, topics[k]) for k in y]).astype(np.float32)
    path = tmp_path / "counts.npz"
    np.savez(path, X=X, y=y)
    out = tmp_path / "run"
    assert main(["train", str(path), "-o", str(out), "--likelihood", "multinomial",
                 "--likelihood-scale", "0.5", "--epochs", "2", *TINY,
                 "--pretrain-epochs", "100"]) == 0  # 20 AE steps (TINY's) do not separate them
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["data"]["likelihood"] == "multinomial"
    assert (cfg["settings"]["likelihood"], cfg["settings"]["likelihood_scale"]) == ("multinomial", 0.5)
    assert json.loads((out / "metrics.json").read_text())["scores"]["acc"] == 1.0
    blob_path, _, _ = blobs(tmp_path)  # signed features
    for data, flags, message in [
        (blob_path, ["--likelihood", "multinomial"], "counts or weights >= 0"),
        (path, ["--likelihood", "bernoulli", "--likelihood-scale", "2"], "has no scale"),
        (path, ["--likelihood", "gaussian", "--likelihood-scale", "0"], "scale must be > 0"),
        (path, ["--model", "gmvae", "--likelihood-scale", "2"], "--likelihood-scale applies"),
    ]:
        assert main(["train", str(data), "-o", str(tmp_path / "bad"), *flags, *TINY]) == 2
        assert message in capsys.readouterr().err
        assert not (tmp_path / "bad").exists()

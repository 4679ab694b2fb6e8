"""scripts/bench_dgg.py: the tuple-layout objective against DGGObjective, and a tiny end-to-end run.

The end-to-end run uses a Reuters-10k-shaped fixture written into ``tmp_path`` (named
``reuters10k.npz`` so the script loads it as the named data set, as it would a downloaded
copy); it needs no ``../shared/data``. N2D is left out: UMAP's first call compiles for
longer than these tests may take (it is exercised by the script's smoke run).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from graphclust.graph.graph import KNNGraph
from graphclust.metrics import score_clustering
from graphclust.models.batching import NeighborBatches
from graphclust.models.mixture import build_gmvae
from graphclust.nn.dgg import PI_FLOOR, DGGObjective, MixingPropagation
from graphclust.nn.likelihood import (
    BernoulliLikelihood,
    GaussianLikelihood,
    MultinomialLikelihood,
)
from graphclust.utils import GraphclustError

BENCH_SCRIPT = "bench_dgg"  # loaded by the ``bench`` fixture (conftest.py)


def tiny_model(likelihood, n_features=5, K=3, M=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    model = build_gmvae(n_features, K, likelihood, latent_dim=M, hidden=(4,), generator=g)
    with torch.no_grad():  # a non-trivial prior
        model.prior.means.copy_(torch.randn(K, M, generator=g))
        model.prior.log_vars.copy_(0.3 * torch.randn(K, M, generator=g))
    return model


def tiny_graph():
    """6 nodes, 2 neighbours each; node 5's weights are all zero (no usable neighbour)."""
    indices = np.array([[1, 2], [0, 3], [4, 0], [1, 5], [2, 3], [4, 0]])
    weights = np.array([[0.7, 0.3], [1.0, 2.0], [0.5, 0.5], [0.1, 0.9], [2.0, 0.0], [0.0, 0.0]],
                       dtype=np.float32)
    return KNNGraph(indices, weights, np.ones((6, 2), np.float32))


@pytest.mark.parametrize("likelihood", [BernoulliLikelihood(), GaussianLikelihood(),
                                        MultinomialLikelihood(scale=3.0)],
                         ids=["bernoulli", "gaussian", "multinomial"])
@pytest.mark.parametrize("pi_mode", ["given", "batch"])
def test_tuple_layout_objective_equals_dgg_objective(bench, likelihood, pi_mode):
    torch.manual_seed(0)
    X = torch.rand(6, 5)
    graph = tiny_graph()
    model = tiny_model(likelihood)
    anchors = torch.tensor([4, 1, 5, 3])  # a sub-batch: nodes 0 and 2 enter as neighbours only

    # this toolkit: distinct nodes once, edges as indices, message passing
    batch = NeighborBatches(X, graph, batch_size=6, sample=None).batch(anchors)
    terms = model.node_terms(batch.x, sample=False)
    B = batch.n_anchors
    pi_all = torch.softmax(torch.randn(6, 3, generator=torch.Generator().manual_seed(1)), 1)
    if pi_mode == "given":
        log_pi = pi_all[batch.node_ids].log()
    else:
        log_pi = torch.zeros_like(terms.gamma)
        pi_b = MixingPropagation(0.5)(terms.gamma, batch.edge_index, batch.edge_weight, n_targets=B)
        log_pi[:B] = pi_b.clamp_min(PI_FLOOR).log()
    ours = DGGObjective(likelihood, 0.5)(
        batch.x, terms.recon, terms.latent_term, terms.gamma, log_pi,
        batch.edge_index, batch.edge_weight, n_targets=B,
    )

    # the reference layout: copied rows per tuple, networks on every member
    nbrs = torch.from_numpy(graph.indices)[anchors]
    tuples = bench.materialize_tuples(X, anchors, nbrs)
    w = torch.from_numpy(graph.weights)[anchors]
    theirs = bench.tuple_layout_objective(
        model, tuples, w, 0.5, log_pi=pi_all[anchors].log() if pi_mode == "given" else None,
        sample=False,
    )
    assert theirs.shape == (4,)
    torch.testing.assert_close(theirs, ours, rtol=1e-5, atol=1e-4)


def test_materialize_tuples_copies_anchor_then_neighbour_rows(bench):
    X = torch.arange(12.0).reshape(6, 2)
    anchors = torch.tensor([3, 0])
    nbrs = torch.tensor([[1, 5], [2, 4]])
    t = bench.materialize_tuples(X, anchors, nbrs)
    assert t.shape == (2, 3, 2)
    assert t[0].tolist() == [[6.0, 7.0], [2.0, 3.0], [10.0, 11.0]]
    assert t[1].tolist() == [[0.0, 1.0], [4.0, 5.0], [8.0, 9.0]]
    t[0, 0, 0] = -1.0  # a copy, not a view
    assert X[3, 0] == 6.0


def test_spectral_labels_split_two_cliques(bench):
    # two 4-cliques with no edge between them: the two leading eigenvectors separate them
    idx = np.array([[j for j in range(4) if j != i] for i in range(4)]
                   + [[j for j in range(4, 8) if j != i] for i in range(4, 8)])
    g = KNNGraph(idx, np.ones((8, 3), np.float32), np.ones((8, 3), np.float32))
    labels = bench.spectral_labels(g, 2, seed=0)
    assert len(set(labels[:4])) == 1 and len(set(labels[4:])) == 1 and labels[0] != labels[4]


def reuters_like(path: Path, n_per_class: int = 20, n_classes: int = 3, n_terms: int = 30) -> None:
    """Tf-idf-like rows (non-negative, L2-normalised): each class uses its own block of terms."""
    rng = np.random.default_rng(0)
    X = 0.02 * rng.random((n_per_class * n_classes, n_terms))
    y = np.repeat(np.arange(n_classes), n_per_class)
    block = n_terms // n_classes
    for c in range(n_classes):
        X[y == c, c * block:(c + 1) * block] += rng.random((n_per_class, block))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    np.savez(path, X=X.astype(np.float32), y=y.astype(np.int64))


def _finite_numbers(obj) -> bool:
    if isinstance(obj, dict):
        return all(_finite_numbers(v) for v in obj.values())
    if isinstance(obj, list):
        return all(_finite_numbers(v) for v in obj)
    if isinstance(obj, float):
        return math.isfinite(obj)
    return True


def test_end_to_end_on_a_reuters10k_shaped_fixture(bench, tmp_path, capsys):
    reuters_like(tmp_path / "reuters10k.npz")
    out = tmp_path / "results"
    rc = bench.main([
        "--data", "reuters10k", "--data-dir", str(tmp_path), "--seeds", "2",
        "--methods", "kmeans,spectral,dgg,vade,tuple-epoch",
        "--hidden", "32,32", "--epochs", "1", "--pretrain-epochs", "1",
        "--siamese-epochs", "1", "--siamese-mutual", "--siamese-augment", "--init", "gmm", "--batch-size", "16",
        "--tuple-batches", "1", "--device", "cpu", "--out", str(out), "--quiet",
        "--table", str(tmp_path / "table.md"),
    ])
    assert rc == 0
    files = sorted(out.glob("*.json"))
    records = {json.loads(f.read_text())["model"]: json.loads(f.read_text()) for f in files}
    assert sorted(records) == ["dgg", "kmeans", "spectral", "tuple-epoch", "vade"]
    for rec in records.values():
        assert set(rec) == {"benchmark", "dataset", "model", "metrics", "wall_s", "peak_rss_mb",
                            "command", "versions", "machine", "date"}
        assert rec["benchmark"] == "dgg" and rec["dataset"] == "reuters10k"
        assert rec["wall_s"] > 0 and rec["peak_rss_mb"] > 0
        assert _finite_numbers(rec["metrics"])

    for model in ("kmeans", "spectral", "dgg", "vade"):
        m = records[model]["metrics"]
        assert m["seeds"] == [0, 1] and len(m["per_seed"]) == 2
        for key in ("acc", "nmi", "ari"):
            assert f"{key}_mean" in m and f"{key}_std" in m
        assert 0.0 <= m["acc_mean"] <= 1.0
    # three well-separated blocks of terms: k-means on the raw rows finds them
    assert records["kmeans"]["metrics"]["acc_mean"] == 1.0

    dgg = records["dgg"]["metrics"]
    assert {"load", "raw_knn", "siamese", "knn_graph", "pretrain_ae", "init", "head",
            "train"} <= set(dgg["stage_seconds_mean"])
    assert [p["epoch"] for p in dgg["curve"]] == [0, 1]
    assert dgg["curve"][1]["elapsed_s"] > dgg["curve"][0]["elapsed_s"] > 0
    assert dgg["epochs"] == 1 and dgg["paper_epochs"] == 300 and dgg["fewer_epochs_than_paper"]
    assert dgg["settings"]["siamese_mutual"] is True and dgg["settings"]["siamese_augment"] is True

    tup = records["tuple-epoch"]["metrics"]
    assert tup["extrapolated"] is True and tup["timed_batches"] == 1
    assert tup["full_tuple_array_bytes"] == 60 * 21 * 30 * 4
    assert tup["ratio_vs_dgg_run"] > 0 and tup["ratio_vs_ours_all_neighbors"] > 0

    table = (tmp_path / "table.md").read_text()
    assert "| reuters10k | DGG | 2 |" in table and "DGG accuracy vs time" in table
    assert table.strip() in capsys.readouterr().out


def test_unknown_method_is_refused(bench, capsys):
    with pytest.raises(SystemExit):
        bench.main(["--methods", "dgg,bogus"])
    assert "unknown methods ['bogus']" in capsys.readouterr().err


def test_recommended_flags_can_be_switched_off(bench):
    """MNIST (and COIL-20) recommend mutual, augmented Siamese pairs; ``--no-siamese-*`` turns
    them off; 20 Newsgroups keeps plain pairs."""
    ap = bench.build_parser()
    on = bench.resolve_settings("mnist", ap.parse_args([]))
    assert on.siamese_mutual is True and on.siamese_augment is True
    off = bench.resolve_settings("mnist", ap.parse_args(["--no-siamese-mutual",
                                                         "--no-siamese-augment"]))
    assert off.siamese_mutual is False and off.siamese_augment is False
    assert bench.resolve_settings("20news", ap.parse_args([])).siamese_mutual is False


def test_umap_siamese_start_clusters_the_seeds_siamese_embedding(bench, tmp_path, monkeypatch,
                                                                 fake_umap):
    """``--init umap-siamese``: DGG and VaDE start from UMAP + GMM labels of the seed's
    Siamese embedding. The embedding is trained once per seed (DGG's graph and the start
    share it) and both methods charge its seconds; the start's labels are those of
    ``umap_gmm_labels`` on that embedding."""
    import siamese

    fake_umap()  # UMAP itself is slow to import (numba): the identity stands in
    fits = []
    real_fit = siamese.SiameseEmbedder.fit_transform

    def counting_fit(self, X, *a, **k):
        emb = real_fit(self, X, *a, **k)
        fits.append(emb)
        return emb

    monkeypatch.setattr(siamese.SiameseEmbedder, "fit_transform", counting_fit)
    reuters_like(tmp_path / "reuters10k.npz")
    out = tmp_path / "results"
    rc = bench.main([
        "--data", "reuters10k", "--data-dir", str(tmp_path), "--seeds", "1",
        "--methods", "dgg,vade", "--hidden", "32,32", "--latent-dim", "4", "--epochs", "1",
        "--pretrain-epochs", "1", "--siamese-epochs", "1", "--init", "umap-siamese",
        "--batch-size", "16", "--device", "cpu", "--out", str(out), "--quiet",
    ])
    assert rc == 0
    assert len(fits) == 1  # one seed, one Siamese embedding for both methods
    expected = bench.umap_gmm_labels(fits[0], 3, 0, n_neighbors=20)
    start = score_clustering(bench.load_dataset("reuters10k", data_dir=tmp_path).y,
                             expected).as_dict()
    records = {json.loads(f.read_text())["model"]: json.loads(f.read_text())
               for f in out.glob("*.json")}
    for model in ("dgg", "vade"):
        m = records[model]["metrics"]
        assert m["settings"]["init"] == "umap-siamese"
        stages = m["per_seed"][0]["stage_seconds"]
        assert {"siamese", "siamese_umap_gmm", "init"} <= set(stages)
        assert m["per_seed"][0]["init_scores"] == pytest.approx(start)
    with pytest.raises(bench.GraphclustError, match="init must be one of"):
        bench.Settings(init="umap-pixels").validate()


def test_overclustered_siamese_start_is_merged_along_the_pixel_graph(bench, fake_umap,
                                                                      monkeypatch):
    """``start_overcluster``: the GMM over-clusters the Siamese UMAP; the raw-feature kNN
    graph merges the parts. Here the embedding glues half of class 1 next to class 0: two
    components cannot separate it, four components merged along the pixels recover both."""
    import types

    fake_umap()  # the identity: the embedding is the test's
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 40)
    X = (np.where(y[:, None] == 0, 0.0, 5.0) + rng.normal(0, 0.3, (80, 6))).astype(np.float32)
    centre = np.zeros((80, 2))
    centre[40:60, 0] = 2.5  # half of class 1 sits beside class 0 in the embedding ...
    centre[60:, 0] = 30.0  # ... the other half far away
    emb = (centre + rng.normal(0, 0.25, (80, 2))).astype(np.float32)

    def start(overcluster):
        args = bench.build_parser().parse_args(["--start-overcluster", str(overcluster)])
        settings = bench.dataclasses.replace(
            bench.resolve_settings("mnist", args), siamese_neighbors=5)
        b = bench.Bench(data=types.SimpleNamespace(X=X, y=y, name="toy"), load_s=0.0,
                        settings=settings, args=args, device="cpu", n_clusters=2)
        b._siamese[0] = (emb, {"raw_knn": 0.0, "siamese": 0.0})
        init, stages = bench.start_init(b, 0)
        assert "siamese_umap_gmm" in stages
        return init.labels

    assert score_clustering(y, start(1)).acc <= 0.75  # two components keep the glued half
    assert score_clustering(y, start(2)).acc == 1.0
    # a GMM that leaves one of its four components empty still merges (parts renumbered)
    parts = np.repeat([0, 2, 3], [40, 20, 20])
    monkeypatch.setattr(bench, "umap_gmm_labels", lambda *a, **k: parts)
    merged = start(2)
    assert score_clustering(y, merged).acc == 1.0 and set(merged) == {0, 1}
    with pytest.raises(GraphclustError, match="start_overcluster must be >= 1"):
        bench.Settings(start_overcluster=0).validate()


def test_consensus_siamese_start_joins_input_and_embedding_runs(bench, fake_umap, monkeypatch):
    """``--init consensus-siamese``: nine UMAP + GMM runs of the input (three neighbourhoods
    ending at ``umap_neighbors``, three metrics) and three of the seed's Siamese embedding
    (euclidean, each weighted ``siamese_run_weight``), joined by :func:`coassociation_labels`."""
    import types

    seen = fake_umap()  # the identity: the embedding is the test's
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 30)
    X = (6 * np.eye(6)[y] + rng.normal(0, 0.3, (90, 6))).astype(np.float32)
    emb = (4 * np.eye(3)[y] + rng.normal(0, 0.3, (90, 3))).astype(np.float32)
    args = bench.build_parser().parse_args(["--init", "consensus-siamese"])
    settings = bench.resolve_settings("coil20", args)
    b = bench.Bench(data=types.SimpleNamespace(X=X, y=y, name="toy"), load_s=0.0,
                    settings=settings, args=args, device="cpu", n_clusters=3)
    b._siamese[1] = (emb, {"raw_knn": 0.0, "siamese": 0.0})
    init, stages = bench.start_init(b, 1)
    assert {"siamese", "consensus"} <= set(stages)
    calls = [(c["n_neighbors"], c["metric"]) for c in seen["calls"]]
    assert calls == [(nn, m) for nn in (3, 4, 5) for m in ("euclidean", "cosine", "correlation")
                     ] + [(nn, "euclidean") for nn in (3, 4, 5)]
    runs = np.vstack([
        bench.umap_gmm_runs(X, 3, 1, n_neighbors=(3, 4, 5),
                            metric=("euclidean", "cosine", "correlation"),
                            n_init=settings.gmm_n_init),
        bench.umap_gmm_runs(emb, 3, 1, n_neighbors=(3, 4, 5), n_init=settings.gmm_n_init)])
    weights = [1.0] * 9 + [settings.siamese_run_weight] * 3
    assert (init.labels == bench.coassociation_labels(runs, 3, weights=weights)).all()
    assert score_clustering(y, init.labels).acc == 1.0
    # the weight reaches the consensus: the Siamese runs alone decide when they outweigh
    # the input runs, whose labels a stand-in makes useless
    heavy = bench.dataclasses.replace(settings, siamese_run_weight=100.0)
    b.settings = heavy
    useless = np.zeros((9, 90), dtype=np.int64)
    useless[:, ::2] = 1
    real_runs = bench.umap_gmm_runs

    def input_runs_useless(features, *a, **k):
        return useless if features is X else real_runs(features, *a, **k)

    monkeypatch.setattr(bench, "umap_gmm_runs", input_runs_useless)
    assert score_clustering(y, bench.start_init(b, 1)[0].labels).acc == 1.0
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(GraphclustError, match="siamese_run_weight"):
            bench.dataclasses.replace(settings, siamese_run_weight=bad).validate()


def test_likelihood_flags_reach_the_models(bench):
    """``--likelihood`` / ``--likelihood-scale`` set the AE / DGG / VaDE likelihood."""
    ap = bench.build_parser()
    X = np.random.default_rng(0).random((8, 4)).astype(np.float32)
    auto = bench.resolve_settings("coil20", ap.parse_args([]))
    assert auto.likelihood == "auto" and isinstance(auto.make_likelihood(X), BernoulliLikelihood)
    text = bench.resolve_settings("coil20", ap.parse_args(["--likelihood", "multinomial",
                                                           "--likelihood-scale", "3"]))
    lik = text.make_likelihood(X)
    assert isinstance(lik, MultinomialLikelihood) and lik.scale == 3.0
    # 20 Newsgroups recommends the text likelihood; the flags override it
    news = bench.resolve_settings("20news", ap.parse_args([])).make_likelihood(X)
    assert isinstance(news, MultinomialLikelihood) and news.scale == 10.0
    plain = bench.resolve_settings("20news", ap.parse_args(["--likelihood", "bernoulli"]))
    assert isinstance(plain.make_likelihood(X), BernoulliLikelihood)  # drops the text scale
    back = bench.resolve_settings("20news", ap.parse_args(["--likelihood", "auto",
                                                           "--likelihood-scale", "2"]))
    with pytest.raises(GraphclustError, match="bernoulli likelihood has no scale"):
        back.make_likelihood(X)  # auto picks Bernoulli for data in [0, 1]
    with pytest.raises(GraphclustError, match="likelihood must be"):
        bench.dataclasses.replace(auto, likelihood="poisson").validate()

"""The seeds' other models as estimators (AEGMM, GMVAE, KDVAE, KDAE, VCAMI) and the plug-in
graph regulariser: end to end on separated blobs, the shared API, bad input."""

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from graphclust.estimators import AEGMM, GMVAE, KDAE, KDVAE, VCAMI, GraphRegularizer
from graphclust.graph.graph import build_knn_graph, data_fingerprint
from graphclust.graph.knn import knn_torch
from graphclust.inspect.interface import Inspectable
from graphclust.metrics import cluster_acc
from graphclust.models.pipeline import KNNGraphBuilder
from graphclust.nn.likelihood import LearnedStdGaussianLikelihood
from graphclust.utils import GraphclustError

COMMON = dict(hidden=(16,), latent_dim=3, pretrain_epochs=40, pretrain_batch_size=32,
              random_state=0, verbose=False, device="cpu")
TRAIN = dict(n_epochs=4, batch_size=32)
MODELS = {
    "gmvae": (GMVAE, {}),
    "kdvae": (KDVAE, dict(init_hidden=(16,), pair_epochs=100)),
    "kdae": (KDAE, dict(init_hidden=(16,), pair_epochs=100)),
    "vcami": (VCAMI, {}),
}


def blobs(n=90, d=6, seed=0):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(3), n // 3)
    X = (rng.normal(size=(n, d)) * 0.5 + 8 * np.eye(3, d)[y]).astype(np.float32)
    return X, y


def graph_for(X, k=5):
    return build_knn_graph(X, k, knn=knn_torch(X, k), meta={"data_fingerprint": data_fingerprint(X)})


def make(name, **extra):
    cls, kw = MODELS[name]
    return cls(**{"n_clusters": 3, **COMMON, **TRAIN, **kw, **extra})


@pytest.mark.parametrize("name", list(MODELS))
def test_end_to_end_on_separated_blobs(name):
    X, y = blobs()
    model = make(name).fit(X, y)
    assert cluster_acc(y, model.labels_) == 1.0
    assert [r["epoch"] for r in model.history_] == [1, 2, 3, 4]
    assert model.history_[-1]["acc"] == 1.0
    np.testing.assert_array_equal(model.predict(X), model.labels_)
    proba = model.predict_proba(X)
    assert proba.shape == (90, 3)
    np.testing.assert_allclose(proba.sum(1), 1, rtol=1e-5)
    emb = model.transform(X)
    assert emb.shape == (90, 9 if name in ("kdvae", "kdae") else 3)
    np.testing.assert_array_equal(model.fit_predict(X), model.labels_)  # same seed, same result
    assert model.pi_ is None and model.graph_ is None
    assert model.stage_times_.keys() >= {"pretrain_ae", "init", "start", "train"}
    with pytest.raises(AttributeError, match="without a graph"):
        _ = model.affinity_matrix_


@pytest.mark.parametrize("name", list(MODELS))
def test_with_graph_regularizer(name):
    X, y = blobs()
    g = graph_for(X)
    model = make(name, graph_regularizer=GraphRegularizer(g, weight=0.5)).fit(X, y)
    assert cluster_acc(y, model.labels_) == 1.0
    assert model.graph_ is g
    A = model.affinity_matrix_
    assert sp.isspmatrix_csr(A) and A.shape == (90, 90) and A.nnz == 90 * 5
    i, j = 7, g.indices[7, 1]
    assert A[i, j] == pytest.approx(float(model.proba_[i] @ model.proba_[j]), rel=1e-5)
    assert model.pi_.shape == (90, 3)
    np.testing.assert_allclose(model.pi_.sum(1), 1, rtol=1e-5)
    assert isinstance(model, Inspectable)


def test_regulariser_with_a_graph_builder():
    X, y = blobs()
    reg = GraphRegularizer(KNNGraphBuilder(k=4), weight=0.3, pi="model")
    model = make("kdae", graph_regularizer=reg).fit(X, y)
    assert model.graph_.k == 4 and model.graph_.n_nodes == 90
    assert model.pi_ is None  # the model's own (uniform) mixing weights
    assert cluster_acc(y, model.labels_) == 1.0
    assert reg.needs_build  # the estimator's parameter is not modified


def test_aegmm_is_the_gmm_of_the_autoencoder_latent():
    X, y = blobs()
    model = AEGMM(n_clusters=3, **COMMON).fit(X, y)
    assert cluster_acc(y, model.labels_) == 1.0
    np.testing.assert_array_equal(model.labels_, model.init_.labels)  # the mixture's own labels
    assert model.history_ == [] and model.transform(X).shape == (90, 3)
    g = graph_for(X)
    with_graph = AEGMM(n_clusters=3, graph=g, **COMMON).fit(X)
    assert with_graph.affinity_matrix_.nnz == 90 * 5  # inspection only
    np.testing.assert_array_equal(with_graph.labels_, model.labels_)


def test_gmvae_uses_an_annealed_learned_std_for_real_data():
    X, y = blobs()
    model = make("gmvae", n_epochs=2, std_anneal=(0.4, 0.1), anneal_epochs=1).fit(X, y)
    assert isinstance(model.likelihood_, LearnedStdGaussianLikelihood)
    assert model.likelihood_.eps == pytest.approx(0.1) and model.model_.eps_z == pytest.approx(0.1)
    lik = LearnedStdGaussianLikelihood(0.3)
    make("gmvae", n_epochs=1, likelihood=lik).fit(X)
    assert lik.eps == 0.3  # a given likelihood is copied, not annealed in place


def test_vcami_image_augmentation_from_the_image_shape():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 20)
    imgs = np.zeros((40, 6, 6), np.float32)
    imgs[y == 0, 1:5, 2:4] = 1.0  # a vertical bar
    imgs[y == 1, 2:4, 1:5] = 1.0  # a horizontal bar
    X = np.clip(imgs.reshape(40, 36) + 0.05 * rng.random((40, 36)), 0, 1).astype(np.float32)
    model = VCAMI(n_clusters=2, image_shape=(6, 6), **COMMON, **TRAIN).fit(X, y)
    assert type(model.model_.augment).__name__ == "ImageAugment"
    assert cluster_acc(y, model.labels_) == 1.0


def test_init_only_stores_and_clone_works():
    m = KDVAE(n_clusters=-5, hidden="nonsense", graph_regularizer="nope")
    assert m.get_params()["n_clusters"] == -5
    for cls in (GMVAE, KDVAE, KDAE, VCAMI, AEGMM):
        c = clone(cls(n_clusters=4))
        assert c.n_clusters == 4
        with pytest.raises(NotFittedError):
            cls().predict(np.zeros((2, 3)))


def test_bad_inputs():
    X, _ = blobs()
    g_other = graph_for(X[:60])
    cases = [
        (make("kdvae", graph_regularizer=g_other), "GraphRegularizer"),
        (make("kdvae", graph_regularizer=GraphRegularizer(g_other)), "other data"),
        (make("kdvae", graph_regularizer=GraphRegularizer(graph_for(X), weight=1.5)), r"\[0, 1\)"),
        (make("gmvae", n_samples=1), "n_samples"),
        (make("gmvae", std_anneal=(0.01, 0.5)), "start >= end"),
        (make("gmvae", std_anneal="fast"), "two numbers"),
        (make("kdvae", pair_epochs=-1), "pair_epochs"),
        (make("kdvae", init_hidden=(0,)), "init_hidden"),
        (make("vcami", augment="rotate"), "augment"),
        (make("vcami", image_shape=(2, 2)), "pixels"),
        (make("vcami", cmi_weight=-1.0), ">= 0"),
        (make("vcami", batch_size=1), "batch_size"),
        (make("kdae", n_clusters=1), "n_clusters"),
        (make("kdae", likelihood="bernoulli"), "Bernoulli"),
        (make("kdae", graph=np.zeros((90, 5))), "KNNGraph"),
        (make("kdae", resume=True), "checkpoint_dir"),
        (AEGMM(n_clusters=3, hidden="x", **{k: v for k, v in COMMON.items() if k != "hidden"}),
         "hidden"),
    ]
    for model, match in cases:
        with pytest.raises(GraphclustError, match=match):
            model.fit(X)
    Xn = X.copy()
    Xn[0, 0] = np.nan
    with pytest.raises(GraphclustError, match="NaN"):
        make("gmvae").fit(Xn)
    fitted = make("kdae", n_epochs=0, pretrain_epochs=1, pair_epochs=1).fit(X)
    with pytest.raises(GraphclustError, match="features"):
        fitted.predict(X[:, :4])


def test_checkpoint_dir_resume_matches_uninterrupted(tmp_path):
    X, _ = blobs()
    full = make("vcami", n_epochs=3).fit(X)
    make("vcami", n_epochs=1, checkpoint_dir=tmp_path).fit(X)
    resumed = make("vcami", n_epochs=3, checkpoint_dir=tmp_path, resume=True).fit(X)
    assert [r["loss"] for r in resumed.history_] == [r["loss"] for r in full.history_]
    np.testing.assert_array_equal(resumed.labels_, full.labels_)

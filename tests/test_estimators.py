import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from graphclust.estimators import DGG, ClusterInspection, VaDE, affinity_on_edges
from graphclust.graph.graph import KNNGraph, build_knn_graph, data_fingerprint
from graphclust.graph.knn import knn_torch
from graphclust.metrics import cluster_acc
from graphclust.utils import GraphclustError

TINY = dict(hidden=(16,), latent_dim=2, n_epochs=4, pretrain_epochs=15, batch_size=32,
            pretrain_batch_size=32, random_state=0, verbose=False, device="cpu")


def blobs(n=90, d=6, seed=0):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(3), n // 3)
    X = (rng.normal(size=(n, d)) * 0.5 + 8 * np.eye(3, d)[y]).astype(np.float32)
    return X, y


def graph_for(X, k=5):
    return build_knn_graph(X, k, knn=knn_torch(X, k), meta={"data_fingerprint": data_fingerprint(X)})


@pytest.mark.parametrize("cls", [DGG, VaDE])
def test_end_to_end_on_separated_blobs(cls):
    X, y = blobs()
    extra = {"n_neighbors": 5} if cls is DGG else {}
    model = cls(n_clusters=3, **TINY, **extra).fit(X, y)
    assert cluster_acc(y, model.labels_) == 1.0
    assert [r["epoch"] for r in model.history_] == [1, 2, 3, 4]
    assert {"loss", "acc", "nmi", "ari"} <= set(model.history_[-1])
    assert model.history_[-1]["acc"] == 1.0
    np.testing.assert_array_equal(model.predict(X), model.labels_)
    proba = model.predict_proba(X)
    assert proba.shape == (90, 3)
    np.testing.assert_allclose(proba.sum(1), 1, rtol=1e-5)
    assert model.transform(X).shape == (90, 2)
    np.testing.assert_array_equal(model.fit_predict(X), model.labels_)  # same seed


def test_dgg_affinity_on_graph_edges_and_inspection():
    X, _ = blobs()
    g = graph_for(X)
    model = DGG(n_clusters=3, graph=g, **TINY).fit(X)
    A = model.affinity_matrix_
    assert sp.isspmatrix_csr(A) and A.shape == (90, 90) and A.nnz == 90 * 5
    i, j = 4, g.indices[4, 2]
    assert A[i, j] == pytest.approx(float(model.proba_[i] @ model.proba_[j]), rel=1e-5)
    info = model.inspection_data()
    assert isinstance(info, ClusterInspection)
    assert info.graph is g and info.pi.shape == (90, 3) and info.embedding.shape == (90, 2)
    np.testing.assert_allclose(info.pi.sum(1), 1, rtol=1e-5)
    assert model.stage_times_.keys() >= {"pretrain_ae", "init", "head", "train"}


def test_vade_affinity_needs_a_graph():
    X, _ = blobs()
    model = VaDE(n_clusters=3, **TINY).fit(X)
    assert not hasattr(model, "affinity_matrix_")
    with pytest.raises(AttributeError, match="without a graph"):
        _ = model.affinity_matrix_
    g = graph_for(X)
    A = model.affinity_on(g)
    with_graph = VaDE(n_clusters=3, graph=g, **TINY).fit(X)
    assert (with_graph.affinity_matrix_ != A).nnz == 0  # graph not used for training
    np.testing.assert_array_equal(with_graph.labels_, model.labels_)


def test_init_only_stores_and_clone_works():
    m = DGG(n_clusters=-5, hidden="nonsense")  # validated in fit, not here
    assert m.get_params()["n_clusters"] == -5
    c = clone(DGG(n_clusters=4, n_epochs=2))
    assert c.n_clusters == 4 and c.n_epochs == 2
    with pytest.raises(NotFittedError):
        DGG().predict(np.zeros((2, 3)))


@pytest.mark.parametrize("k", [1, 0, 91, 2.5])
def test_bad_n_clusters(k):
    X, _ = blobs()
    with pytest.raises(GraphclustError, match="n_clusters"):
        DGG(n_clusters=k, **TINY).fit(X)


def test_bad_inputs():
    X, y = blobs()
    Xn = X.copy()
    Xn[5, 1] = np.nan
    with pytest.raises(GraphclustError, match="NaN"):
        VaDE(n_clusters=3, **TINY).fit(Xn)
    with pytest.raises(GraphclustError, match="labels must give one class per sample"):
        VaDE(n_clusters=3, **TINY).fit(X, y[:10])
    with pytest.raises(GraphclustError, match="2-D"):
        VaDE(n_clusters=3, **TINY).fit(X[0])
    other = graph_for(X[:60])
    with pytest.raises(GraphclustError, match="built for other data"):
        DGG(n_clusters=3, graph=other, **TINY).fit(X)
    shuffled = graph_for(X[::-1].copy())
    with pytest.raises(GraphclustError, match="fingerprint"):
        DGG(n_clusters=3, graph=shuffled, **TINY).fit(X)
    with pytest.raises(GraphclustError, match="KNNGraph"):
        DGG(n_clusters=3, graph=np.zeros((90, 5)), **TINY).fit(X)
    with pytest.raises(GraphclustError, match="n_neighbors"):
        DGG(n_clusters=3, n_neighbors=90, **TINY).fit(X)
    with pytest.raises(GraphclustError, match="Bernoulli"):
        VaDE(n_clusters=3, likelihood="bernoulli", **TINY).fit(X)
    with pytest.raises(GraphclustError, match="checkpoint_dir"):
        VaDE(n_clusters=3, resume=True, **TINY).fit(X)
    with pytest.raises(GraphclustError, match="integer random_state"):
        VaDE(n_clusters=3, checkpoint_dir="unused", **{**TINY, "random_state": None}).fit(X)
    model = VaDE(n_clusters=3, **{**TINY, "n_epochs": 0, "pretrain_epochs": 1}).fit(X)
    with pytest.raises(GraphclustError, match="features"):
        model.predict(X[:, :4])


def test_resume_from_checkpoint_dir_matches_uninterrupted(tmp_path):
    X, y = blobs()

    class Stop(Exception):
        pass

    def stop(record, history):
        if record["epoch"] == 2:
            raise Stop

    full = DGG(n_clusters=3, n_neighbors=5, **TINY).fit(X, y)
    with pytest.raises(Stop):
        DGG(n_clusters=3, n_neighbors=5, checkpoint_dir=tmp_path / "run", callbacks=[stop],
            **TINY).fit(X, y)
    resumed = DGG(n_clusters=3, n_neighbors=5, checkpoint_dir=tmp_path / "run", resume=True,
                  **TINY).fit(X, y)
    np.testing.assert_array_equal(resumed.labels_, full.labels_)
    np.testing.assert_array_equal(resumed.proba_, full.proba_)
    assert [r["loss"] for r in resumed.history_] == [r["loss"] for r in full.history_]


def test_label_epochs_fit_the_start_and_are_part_of_the_run_settings(tmp_path):
    X, y = blobs()
    plain = DGG(n_clusters=3, n_neighbors=5, **TINY).fit(X, y)
    fitted = DGG(n_clusters=3, n_neighbors=5, label_epochs=5, checkpoint_dir=tmp_path / "run",
                 **TINY).fit(X, y)
    assert cluster_acc(y, fitted.labels_) == 1.0
    # the model was refitted before training: another latent space than without it
    assert not np.allclose(fitted.embedding_, plain.embedding_)
    assert fitted.get_params()["label_epochs"] == 5
    # the pretrained stage records them: resuming with other label_epochs is refused
    with pytest.raises(GraphclustError, match="other settings"):
        DGG(n_clusters=3, n_neighbors=5, label_epochs=2, checkpoint_dir=tmp_path / "run",
            resume=True, **TINY).fit(X, y)
    with pytest.raises(GraphclustError, match="label_epochs"):
        DGG(n_clusters=3, n_neighbors=5, label_epochs=-1, **TINY).fit(X, y)


def test_label_weight_is_part_of_the_run_settings_and_checked(tmp_path):
    X, y = blobs()
    fitted = DGG(n_clusters=3, n_neighbors=5, label_epochs=3, label_weight=5.0,
                 checkpoint_dir=tmp_path / "run", **TINY).fit(X, y)
    assert cluster_acc(y, fitted.labels_) == 1.0
    assert fitted.get_params()["label_weight"] == 5.0
    with pytest.raises(GraphclustError, match="other settings"):
        DGG(n_clusters=3, n_neighbors=5, label_epochs=3, label_weight=1.0,
            checkpoint_dir=tmp_path / "run", resume=True, **TINY).fit(X, y)
    with pytest.raises(GraphclustError, match="label_weight"):
        DGG(n_clusters=3, n_neighbors=5, label_epochs=3, label_weight=-1.0, **TINY).fit(X, y)
    with pytest.raises(GraphclustError, match="needs label_epochs"):
        VaDE(n_clusters=3, label_weight=1.0, **TINY).fit(X, y)


def test_affinity_on_edges_by_hand():
    g = KNNGraph(np.array([[1], [0], [1]]), np.ones((3, 1), np.float32), np.ones((3, 1), np.float32))
    p = np.array([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]], np.float32)
    A = affinity_on_edges(p, g).toarray()
    np.testing.assert_allclose(A, [[0, 0.5, 0], [0.5, 0, 0], [0, 0.5, 0]])

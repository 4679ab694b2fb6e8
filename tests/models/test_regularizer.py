"""The graph regulariser as a plug-in: reduction to each model's own loss, hand-checked messages,
node mixing weights, validation."""

import math

import numpy as np
import pytest
import torch

from graphclust.data.augment import VectorAugment
from graphclust.estimators import KDVAE, VCAMI
from graphclust.graph.graph import KNNGraph, build_knn_graph, data_fingerprint
from graphclust.graph.knn import knn_torch
from graphclust.models.kdvae import build_k_autoencoders
from graphclust.models.nvisa import StdAnnealing, build_nvisa
from graphclust.models.pipeline import KNNGraphBuilder
from graphclust.models.regularizer import GraphRegularizer
from graphclust.models.vcami import build_vcami
from graphclust.nn.likelihood import GaussianLikelihood
from graphclust.utils import GraphclustError

N, D = 8, 4


def data(seed=0):
    return torch.randn(N, D, generator=torch.Generator().manual_seed(seed))


def models():
    g = torch.Generator().manual_seed(0)
    lik = GaussianLikelihood()
    return {
        "kdvae": build_k_autoencoders(D, 2, lik, 2, (5,), True, g),
        "kdae": build_k_autoencoders(D, 2, lik, 2, (5,), False, g),
        "gmvae": build_nvisa(D, 2, lik, 2, (5,), 3, StdAnnealing(0.1, 0.1), g),
        "vcami": build_vcami(D, 2, lik, VectorAugment(), 2, (5,), (4,), generator=g),
    }


def graph(indices, weights, X):
    return KNNGraph(np.asarray(indices), np.asarray(weights, np.float32),
                    np.ones(np.shape(indices), np.float32),
                    meta={"data_fingerprint": data_fingerprint(X.numpy())})


def regularised_objective(reg, model, X, pi=None):
    batch = next(iter(reg.batches(X, 5, torch.Generator().manual_seed(0))))
    terms = model.batch_terms(batch.x, batch.n_anchors, torch.Generator().manual_seed(1), True)
    obj = reg.objective(reg.layer(model.likelihood), batch.x, terms, model.log_prior(), pi,
                        batch.node_ids, batch.edge_index, batch.edge_weight, batch.n_anchors)
    return obj, terms.own[: batch.n_anchors], batch, terms


@pytest.mark.parametrize("name", ["kdvae", "kdae", "gmvae", "vcami"])
@pytest.mark.parametrize("case", ["zero_weights", "self_only", "weight_zero"])
def test_regulariser_reduces_to_the_plain_models_loss(name, case):
    X = data()
    model = models()[name]
    ring = np.stack([(np.arange(N) + 1) % N, (np.arange(N) + 2) % N], 1)
    if case == "zero_weights":
        reg = GraphRegularizer(graph(ring, np.zeros((N, 2)), X), weight=0.5, n_sample=None)
    elif case == "self_only":
        reg = GraphRegularizer(graph(np.arange(N)[:, None], np.ones((N, 1)), X), n_sample=1)
    else:
        reg = GraphRegularizer(graph(ring, np.ones((N, 2)), X), weight=0.0)
    reg.validate(X.numpy())
    P = reg.mixing_matrix()
    pi = reg.node_mixing(model.log_gamma(X).exp(), P)
    obj, own, batch, _ = regularised_objective(reg, model, X, pi)
    if case == "zero_weights":
        assert batch.x.shape[0] > batch.n_anchors  # the neighbours are in the batch ...
    torch.testing.assert_close(-obj.mean(), -own.mean())  # ... and change nothing


def test_neighbour_message_by_hand_with_the_models_prior():
    X = data()
    model = models()["kdae"]
    ring = np.stack([(np.arange(N) + 1) % N], 1)
    reg = GraphRegularizer(graph(ring, np.ones((N, 1)), X), weight=0.25, n_sample=None, pi="model")
    obj, own, batch, terms = regularised_objective(reg, model, X)
    src, dst = batch.edge_index
    for e in range(src.numel()):
        i, j = dst[e].item(), src[e].item()
        rec = -0.5 * ((batch.x[i] - terms.recon[j, 0]) ** 2 + math.log(2 * math.pi)).sum()
        m = rec + terms.latent_term[j] + (terms.gamma[j] * -math.log(2)).sum()
        assert obj[i].item() == pytest.approx((0.75 * own[i] + 0.25 * m).item(), rel=1e-5)


def test_node_mixing_is_dgg_propagation():
    X = data()
    ring = np.stack([(np.arange(N) + 1) % N, (np.arange(N) + 3) % N], 1)
    w = np.tile([[1.0, 3.0]], (N, 1))
    reg = GraphRegularizer(graph(ring, w, X), weight=0.4)
    gamma = torch.softmax(torch.randn(N, 3, generator=torch.Generator().manual_seed(0)), -1)
    pi = reg.node_mixing(gamma, reg.mixing_matrix())
    expected = 0.6 * gamma + 0.4 * (0.25 * gamma[ring[:, 0]] + 0.75 * gamma[ring[:, 1]])
    torch.testing.assert_close(pi, expected)
    same = torch.tensor([0.2, 0.3, 0.5]).repeat(N, 1)
    torch.testing.assert_close(reg.node_mixing(same, reg.mixing_matrix()), same)


def test_builder_and_validation():
    X = data()
    Xn = X.numpy()
    ring = np.stack([(np.arange(N) + 1) % N], 1)
    g = graph(ring, np.ones((N, 1)), X)
    reg = GraphRegularizer(KNNGraphBuilder(k=3))
    assert reg.needs_build and "KNNGraphBuilder" in reg.config()["graph"]
    with pytest.raises(GraphclustError, match="builder"):
        reg.batches(X, 4, None)
    built = reg.with_graph(g)
    assert not built.needs_build and built.weight == 0.5 and len(built.config()["graph"]) == 16
    for bad, match in [
        (dict(graph=np.zeros((N, 2))), "KNNGraph"),
        (dict(graph=g, weight=1.0), r"\[0, 1\)"),
        (dict(graph=g, weight=-0.1), r"\[0, 1\)"),
        (dict(graph=g, weight=True), r"\[0, 1\)"),
        (dict(graph=g, n_sample=0), "n_sample"),
        (dict(graph=g, n_neighbors=2), "exceeds"),
        (dict(graph=g, pi="node"), "pi must be"),
    ]:
        with pytest.raises(GraphclustError, match=match):
            GraphRegularizer(**bad).validate(Xn)
    with pytest.raises(GraphclustError, match="data"):
        GraphRegularizer(g).validate(Xn[:5])
    with pytest.raises(GraphclustError, match="fingerprint"):
        GraphRegularizer(g).validate(Xn[::-1].copy())


@pytest.mark.parametrize("cls", [KDVAE, VCAMI])
def test_self_only_graph_trains_exactly_like_the_plain_model(cls):
    """With every neighbour the node itself and all neighbours kept (no sampling draws), the
    batches and the model's random draws are those of the plain run: same losses, same labels."""
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 20)
    X = (rng.normal(size=(40, 4)) * 0.5 + 6 * np.eye(2, 4)[y]).astype(np.float32)
    self_only = KNNGraph(np.arange(40)[:, None], np.ones((40, 1), np.float32),
                         np.zeros((40, 1), np.float32))
    kw = dict(n_clusters=2, hidden=(8,), latent_dim=2, n_epochs=2, pretrain_epochs=5,
              batch_size=16, pretrain_batch_size=16, random_state=0, verbose=False, device="cpu")
    if cls is KDVAE:
        kw.update(init_hidden=(8,), pair_epochs=2)
    plain = cls(**kw).fit(X)
    reg = cls(graph_regularizer=GraphRegularizer(self_only, n_sample=None), **kw).fit(X)
    assert [r["loss"] for r in reg.history_] == [r["loss"] for r in plain.history_]
    np.testing.assert_array_equal(reg.labels_, plain.labels_)


def test_graph_built_for_training_data_is_accepted():
    X = data()
    Xn = X.numpy()
    g = build_knn_graph(Xn, 3, knn=knn_torch(Xn, 3), meta={"data_fingerprint": data_fingerprint(Xn)})
    GraphRegularizer(g, n_neighbors=2).validate(Xn)
    assert "weight=0.5" in repr(GraphRegularizer(g))

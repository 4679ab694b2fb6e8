import numpy as np
import pytest
import torch

from graphclust.metrics import cluster_acc
from graphclust.models.mixture import build_gmvae
from graphclust.models.pretrain import (
    CONSENSUS_METRICS,
    INIT_NAMES,
    GMMInit,
    LabelsInit,
    UMAPGMMInit,
    apply_init,
    fit_to_labels,
    latent_means,
    merge_along_graph,
    moments_from_labels,
    named_init,
    pretrain_autoencoder,
    pretrain_head,
    run_init,
    umap_gmm_labels,
    umap_gmm_runs,
)
from graphclust.nn.likelihood import BernoulliLikelihood
from graphclust.utils import GraphclustError


def binary_blobs(n=90, d=12, seed=0):
    """Three prototypes in [0, 1] with pixel noise."""
    rng = np.random.default_rng(seed)
    protos = (rng.random((3, d)) > 0.5).astype(np.float32)
    y = np.repeat(np.arange(3), n // 3)
    X = np.clip(protos[y] + rng.normal(0, 0.1, (n, d)), 0, 1).astype(np.float32)
    return X, y


def test_autoencoder_loss_decreases_and_is_reproducible():
    X, _ = binary_blobs()
    Xt = torch.from_numpy(X)

    def run():
        m = build_gmvae(12, 3, BernoulliLikelihood(), latent_dim=2, hidden=(8,),
                        generator=torch.Generator().manual_seed(0))
        losses = pretrain_autoencoder(m, Xt, epochs=15, batch_size=16, lr=1e-2, noise=0.1,
                                      generator=torch.Generator().manual_seed(1))
        return m, losses

    m1, l1 = run()
    m2, l2 = run()
    assert l1[-1] < l1[0]
    assert l1 == l2
    torch.testing.assert_close(latent_means(m1, Xt), latent_means(m2, Xt))


def test_moments_from_labels_by_hand_and_empty_cluster():
    Z = np.array([[0.0, 0.0], [2.0, 0.0], [10.0, 4.0]])
    r = moments_from_labels(Z, np.array([0, 0, 1]), 3, min_var=0.0)
    np.testing.assert_allclose(r.means[0], [1, 0])
    np.testing.assert_allclose(r.variances[0], [1, 0])
    np.testing.assert_allclose(r.means[1], [10, 4])
    assert r.weights[2] < 1e-2 and r.weights.sum() == pytest.approx(1)
    np.testing.assert_allclose(r.means[2], Z.mean(0), rtol=1e-6)


def test_gmm_and_labels_init_on_separated_latents():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 30)
    Z = rng.normal(0, 0.2, (90, 2)) + np.array([[0, 0], [5, 0], [0, 5]])[y]
    r = GMMInit()(Z, 3, random_state=123456789012345)
    assert cluster_acc(y, r.labels) == 1.0
    assert r.means.shape == r.variances.shape == (3, 2) and r.weights.sum() == pytest.approx(1)
    again = GMMInit()(Z, 3, random_state=123456789012345)
    np.testing.assert_array_equal(r.labels, again.labels)
    r2 = LabelsInit(y)(Z, 3, 0)
    np.testing.assert_array_equal(r2.labels, y)
    with pytest.raises(GraphclustError, match="labels"):
        LabelsInit(y[:10])(Z, 3, 0)
    assert "UMAPGMMInit(n_components=10" in repr(UMAPGMMInit())


def test_apply_init_and_head_learns_the_labels():
    rng = np.random.default_rng(1)
    y = np.repeat([0, 1, 2], 20)
    Z = torch.from_numpy((rng.normal(0, 0.3, (60, 2)) + np.array([[0, 0], [4, 0], [0, 4]])[y])
                         .astype(np.float32))
    m = build_gmvae(6, 3, BernoulliLikelihood(), latent_dim=2, hidden=(4,),
                    generator=torch.Generator().manual_seed(0))
    init = moments_from_labels(Z.numpy(), y, 3)
    apply_init(m, init, logvar_ratio=0.1)
    torch.testing.assert_close(m.prior.means.detach(), torch.from_numpy(init.means))
    _, logvar = m.encoder(torch.rand(2, 6))
    torch.testing.assert_close(logvar, torch.full_like(logvar, float(np.log(0.1 * init.variances.mean()))))
    acc = pretrain_head(m.posterior, Z, y)
    assert acc == 1.0
    pred = m.posterior.log_gamma(Z, Z, None).argmax(1).numpy()
    assert (pred == y).all()
    # an empty cluster stays empty; two clusters use the binary form
    y2 = np.where(y == 2, 1, 0)
    assert pretrain_head(m.posterior, Z, y2) == 1.0
    proba = m.posterior.log_gamma(Z, Z, None).exp()
    assert (proba[:, 2] < 1e-6).all()
    assert (proba.argmax(1).numpy() == y2).all()


def test_umap_init_plumbing_with_a_stand_in_reducer(monkeypatch, fake_umap):
    """UMAP itself is slow to import (numba); check the recipe around it with a stand-in."""
    import sys

    calls = fake_umap(lambda Z: Z[:, :2] * 10)  # any embedding that keeps the clusters
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 30)
    Z = (rng.normal(0, 0.2, (90, 3)) + np.array([[0, 0, 0], [5, 0, 0], [0, 5, 0]])[y]).astype(np.float32)
    r = UMAPGMMInit(n_components=10, n_neighbors=15)(Z, 3, random_state=2**40 + 3)
    assert cluster_acc(y, r.labels) == 1.0
    assert calls["n_components"] == 10 and calls["n_neighbors"] == 15 and calls["min_dist"] == 0.0
    assert 0 <= calls["random_state"] < 2**31
    assert r.means.shape == r.variances.shape == (3, 3)  # moments in the latent space
    monkeypatch.setitem(sys.modules, "umap", None)  # not installed
    with pytest.raises(GraphclustError, match="umap-learn"):
        UMAPGMMInit()(Z, 3, random_state=0)


def test_umap_input_space_embeds_the_data_and_keeps_latent_moments(fake_umap):
    """``space="input"``: UMAP sees the features, the prior is the latent moments."""
    seen = fake_umap(lambda F: F[:, :2])
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 30)
    X = (rng.normal(0, 0.2, (90, 5)) + 6 * np.eye(5)[y]).astype(np.float32)  # clustered
    Z = rng.normal(0, 1, (90, 3)).astype(np.float32)  # an uninformative latent
    init = UMAPGMMInit(space="input")
    assert init.uses_data and not UMAPGMMInit().uses_data
    assert "space='input'" in repr(init) and "space" not in repr(UMAPGMMInit())
    r = run_init(init, Z, 3, 0, data=X)
    assert seen["shape"] == (90, 5)
    assert cluster_acc(y, r.labels) == 1.0
    np.testing.assert_allclose(r.means, moments_from_labels(Z, r.labels, 3).means, rtol=1e-6)
    # an initialiser without uses_data is called with the latent only
    r2 = run_init(LabelsInit(y), Z, 3, 0, data=X)
    assert (r2.labels == y).all()
    with pytest.raises(GraphclustError, match="needs the input features"):
        init(Z, 3, 0)
    with pytest.raises(GraphclustError, match="rows"):
        init(Z, 3, 0, data=X[:10])
    with pytest.raises(GraphclustError, match="space"):
        UMAPGMMInit(space="pixels")


def test_umap_gmm_restarts_escape_a_poor_optimum(fake_umap):
    """``n_init``: of ten GMM restarts the most likely is kept. On 12 uneven blobs the single
    fit of seed 7 merges two of them (ACC 0.91); ten restarts find the split (0.995, one
    point of the overlapping tails misplaced)."""
    fake_umap()  # the "embedding" is the data itself
    rng = np.random.default_rng(0)
    centres = np.array([[i * 3.0, j * 3.0] for i in range(4) for j in range(3)])
    y = np.repeat(np.arange(12), [5, 40, 8, 30, 6, 25, 10, 35, 7, 20, 9, 15])
    E = (rng.normal(0, 0.4, (y.size, 2)) + centres[y]).astype(np.float32)
    restarts = UMAPGMMInit(n_components=2, n_init=10)
    one = UMAPGMMInit(n_components=2)(E, 12, random_state=7)
    best = restarts(E, 12, random_state=7)
    assert cluster_acc(y, one.labels) < 0.92
    assert cluster_acc(y, best.labels) > 0.99
    # the default is left out of the repr, so earlier stage fingerprints still match
    assert "n_init" not in repr(UMAPGMMInit()) and "n_init=10" in repr(restarts)
    for bad in (0, 2.5, True):
        with pytest.raises(GraphclustError, match="n_init"):
            UMAPGMMInit(n_init=bad)


def test_umap_gmm_labels_of_another_embedding_start_through_labels_init(fake_umap):
    """``umap_gmm_labels`` is UMAPGMMInit's clustering on any features: the labels of a
    separate embedding (e.g. a Siamese one), passed as LabelsInit, give the moments that
    UMAPGMMInit(space="input") computes from the same features."""
    fake_umap(lambda F: F[:, :2])
    rng = np.random.default_rng(1)
    y = np.repeat([0, 1, 2], 25)
    E = (rng.normal(0, 0.3, (75, 4)) + 5 * np.eye(4)[y]).astype(np.float32)  # the embedding
    Z = rng.normal(0, 1, (75, 3)).astype(np.float32)  # an uninformative latent
    labels = umap_gmm_labels(E, 3, random_state=4, n_components=2)
    assert labels.dtype == np.int64 and labels.shape == (75,)
    assert cluster_acc(y, labels) == 1.0
    via_labels = LabelsInit(labels)(Z, 3, 4)
    via_input = run_init(UMAPGMMInit(n_components=2, space="input"), Z, 3, 4, data=E)
    np.testing.assert_array_equal(via_labels.labels, via_input.labels)
    np.testing.assert_allclose(via_labels.means, via_input.means, rtol=1e-6)
    np.testing.assert_allclose(via_labels.variances, via_input.variances, rtol=1e-6)


def test_umap_ensemble_runs_every_pair_and_takes_their_consensus(fake_umap):
    """Several ``n_neighbors`` / metrics: one UMAP + GMM run per pair, each with its own seed,
    and the consensus of their labels. The stand-in UMAP of the ``n_neighbors=4`` runs
    glues clusters 1 and 2 together and splits cluster 0, so those runs are wrong; the
    consensus of all six is exact."""
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 30)
    X = (rng.normal(0, 0.3, (90, 2)) + np.array([[0, 0], [8, 0], [0, 8]])[y]).astype(np.float32)
    glued = np.where(y[:, None] == 2, X - [[-8, 8]], X)  # cluster 2 onto cluster 1
    glued[:15] -= [20, 0]  # half of cluster 0 far off
    seen = fake_umap(lambda F: glued if seen["n_neighbors"] == 4 else F)
    one_wrong = umap_gmm_labels(X, 3, 0, n_neighbors=4)
    assert cluster_acc(y, one_wrong) < 0.7
    seen["calls"].clear()
    labels = umap_gmm_labels(X, 3, 5, n_neighbors=(3, 4, 5), metric=("euclidean", "cosine"))
    assert cluster_acc(y, labels) == 1.0
    assert [(c["n_neighbors"], c["metric"]) for c in seen["calls"]] == [
        (nn, m) for nn in (3, 4, 5) for m in ("euclidean", "cosine")]
    seeds = [c["random_state"] for c in seen["calls"]]
    assert len(set(seeds)) == 6 and all(0 <= s < 2**31 for s in seeds)
    # the same seed gives the same runs (and labels); one pair is a plain single run
    seen["calls"].clear()
    again = umap_gmm_labels(X, 3, 5, n_neighbors=(3, 4, 5), metric=("euclidean", "cosine"))
    assert (again == labels).all() and [c["random_state"] for c in seen["calls"]] == seeds
    seen["calls"].clear()
    umap_gmm_labels(X, 3, 5, n_neighbors=[3], metric="cosine")
    assert [(c["n_neighbors"], c["metric"], c["random_state"]) for c in seen["calls"]] == [
        (3, "cosine", 5)]
    # the initialiser: lists in, tuples in the repr (its stage fingerprint), defaults left out
    init = UMAPGMMInit(n_neighbors=[3, 4, 5], metric=["euclidean", "cosine"], space="input")
    assert (init.n_neighbors, init.metric) == ((3, 4, 5), ("euclidean", "cosine"))
    assert "n_neighbors=(3, 4, 5)" in repr(init) and "metric=('euclidean', 'cosine')" in repr(init)
    assert "metric" not in repr(UMAPGMMInit())
    r = run_init(init, rng.normal(size=(90, 3)).astype(np.float32), 3, 5, data=X)
    assert cluster_acc(y, r.labels) == 1.0
    for kw in ({"n_neighbors": "5"}, {"n_neighbors": []}, {"n_neighbors": [3, 4.5]},
               {"metric": 3}, {"metric": ["cosine", None]}):
        with pytest.raises(GraphclustError, match=next(iter(kw))):
            UMAPGMMInit(**kw)


def test_collapsed_umap_clusters_raise_the_covariance_floor(fake_umap, monkeypatch):
    """A GMM that fails with scikit-learn's "ill-defined empirical covariance" error (UMAP
    with min_dist 0 can pack a small cluster into a point) is refitted with a higher
    ``reg_covar``; when every floor fails, the error names the run and what to try."""
    import sklearn.mixture

    fake_umap()
    real = sklearn.mixture.GaussianMixture
    floors = []

    def fussy(floor_that_works):
        class Fussy(real):
            def fit_predict(self, X, y=None):
                floors.append(self.reg_covar)
                if self.reg_covar < floor_that_works:
                    raise ValueError("Fitting the mixture model failed because some "
                                     "components have ill-defined empirical covariance (...)")
                return super().fit_predict(X, y)
        return Fussy

    X, y = binary_blobs()
    monkeypatch.setattr(sklearn.mixture, "GaussianMixture", fussy(1e-4))
    runs = umap_gmm_runs(X, 3, 0, n_neighbors=(3, 4))
    assert runs.shape == (2, 90) and floors == [1e-6, 1e-4, 1e-6, 1e-4]
    assert all(cluster_acc(y, r) == 1.0 for r in runs)
    monkeypatch.setattr(sklearn.mixture, "GaussianMixture", fussy(1.0))
    with pytest.raises(GraphclustError, match=r"n_neighbors=5.*collapsed components"):
        umap_gmm_runs(X, 3, 0, n_neighbors=5)


def test_named_consensus_start():
    """``umap-input-consensus``: three neighbourhoods ending at ``umap_neighbors`` (at least 2)
    times three metrics, of the input features."""
    init = named_init("umap-input-consensus", umap_neighbors=5, n_init=10)
    assert (init.space, init.n_neighbors, init.n_init) == ("input", (3, 4, 5), 10)
    assert init.metric == CONSENSUS_METRICS == ("euclidean", "cosine", "correlation")
    assert named_init("umap-input-consensus", umap_neighbors=3).n_neighbors == (2, 3)
    assert set(INIT_NAMES) == {"gmm", "umap", "umap-input", "umap-input-consensus"}
    with pytest.raises(GraphclustError, match="umap-input-consensus"):
        named_init("consensus")


def _xor_model(posterior="head"):
    """XOR labels of two binary features (which the raw AE latent cannot separate
    linearly), the data, and a pretrained model whose prior is set from the labels."""
    rng = np.random.default_rng(0)
    bits = rng.integers(0, 2, (200, 2))
    y = bits[:, 0] ^ bits[:, 1]
    X = np.clip(np.repeat(bits, 4, axis=1) + rng.normal(0, 0.05, (200, 8)), 0, 1)
    Xt = torch.from_numpy(X.astype(np.float32))
    m = build_gmvae(8, 2, BernoulliLikelihood(), latent_dim=2, hidden=(32,), posterior=posterior,
                    generator=torch.Generator().manual_seed(0))
    pretrain_autoencoder(m, Xt, 30, batch_size=32, lr=3e-3, noise=0.0,
                         generator=torch.Generator().manual_seed(1))
    apply_init(m, moments_from_labels(latent_means(m, Xt).numpy(), y, 2))
    return m, Xt, y


def test_fit_to_labels_makes_the_latent_gmm_agree_with_the_labels():
    """Labels the raw AE latent cannot separate linearly (XOR of two features) become
    the latent GMM's own clusters after fitting to them."""
    m, Xt, y = _xor_model()

    def gmm_acc():
        with torch.no_grad():
            return cluster_acc(y, m.prior.log_posterior(latent_means(m, Xt)).argmax(1).numpy())

    before = gmm_acc()
    head = {k: v.clone() for k, v in m.posterior.state_dict().items()}
    losses = fit_to_labels(m, Xt, y, 60, batch_size=32, lr=3e-3,
                           generator=torch.Generator().manual_seed(2))
    assert len(losses) == 60 and losses[-1] < losses[0]
    assert before < 0.9 and gmm_acc() >= 0.97
    # the head is left alone; zero epochs change nothing
    for k, v in m.posterior.state_dict().items():
        torch.testing.assert_close(v, head[k])
    state = {k: v.clone() for k, v in m.state_dict().items()}
    assert fit_to_labels(m, Xt, y, 0) == []
    for k, v in m.state_dict().items():
        torch.testing.assert_close(v, state[k])
    with pytest.raises(GraphclustError, match="labels for"):
        fit_to_labels(m, Xt, y[:10], 1)
    with pytest.raises(GraphclustError, match=r"lie in \[0, 2\)"):
        fit_to_labels(m, Xt, y + 1, 1)
    with pytest.raises(GraphclustError, match=">= 0"):
        fit_to_labels(m, Xt, y, -1)


@pytest.mark.parametrize("posterior", ["head", "gmm"])
def test_label_weight_adds_the_posterior_log_likelihood_of_the_labels(posterior):
    m, Xt, y = _xor_model(posterior)
    state = {k: v.clone() for k, v in m.state_dict().items()}

    def first_loss(weight):
        m.load_state_dict(state)
        # one batch holding every row: the loss is taken before the only step
        return fit_to_labels(m, Xt, y, 1, batch_size=len(y), lr=1e-3, label_weight=weight,
                             generator=torch.Generator().manual_seed(2))[0]

    m.load_state_dict(state)
    with torch.no_grad():
        mu = m.encoder(Xt)[0]
        if posterior == "head":
            logits = m.posterior.linear(mu)
        else:  # pi_k N(mu; mu_k, sigma_k^2), diagonal, normalised over k
            pr = m.prior
            var = pr.log_vars.exp()[None]
            logits = torch.log_softmax(pr.mixing_logits, -1) - 0.5 * (
                (mu[:, None, :] - pr.means[None]) ** 2 / var + torch.log(2 * torch.pi * var)
            ).sum(-1)
        by_hand = -torch.log_softmax(logits, -1)[np.arange(len(y)), y].mean()
    # same noise, same model: the losses differ by exactly weight * mean(-ln q(y | x))
    assert first_loss(3.0) - first_loss(0.0) == pytest.approx(3.0 * by_hand.item(), rel=1e-4)
    assert by_hand.item() > 0.1  # an untrained head: the term is not vanishing


def test_label_weight_trains_the_head_to_reproduce_the_labels():
    m, Xt, y = _xor_model()
    head = {k: v.clone() for k, v in m.posterior.state_dict().items()}
    fit_to_labels(m, Xt, y, 60, batch_size=32, lr=3e-3, label_weight=5.0,
                  generator=torch.Generator().manual_seed(2))
    assert any(not torch.equal(v, head[k]) for k, v in m.posterior.state_dict().items())
    with torch.no_grad():
        pred = m.posterior.log_gamma(latent_means(m, Xt), None, None).argmax(1).numpy()
    assert np.mean(pred == y) >= 0.97  # the head itself, no relabelling
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(GraphclustError, match="label_weight"):
            fit_to_labels(m, Xt, y, 1, label_weight=bad)


def _greedy_average_merge(labels, neighbors, weights, n_clusters):
    """Brute-force reference: join the pair of groups with the largest mean pair weight."""
    n = len(labels)
    A = np.zeros((n, n))
    for i in range(n):
        for j, w in zip(neighbors[i], weights[i]):
            if j >= 0:
                A[i, j] += w
                A[j, i] += w
    groups = [[c] for c in range(labels.max() + 1)]
    while len(groups) > n_clusters:
        best, pair = -1.0, None
        for a in range(len(groups)):
            for b in range(a + 1, len(groups)):
                ia, ib = np.isin(labels, groups[a]), np.isin(labels, groups[b])
                s = A[np.ix_(ia, ib)].sum() / (ia.sum() * ib.sum())
                if s > best:
                    best, pair = s, (a, b)
        a, b = pair
        groups[a] += groups.pop(b)
    out = np.empty(n, dtype=np.int64)
    for g in groups:
        out[np.isin(labels, g)] = min(g)
    return out


def _same_partition(a, b):
    return all(len(np.unique(b[a == v])) == 1 for v in np.unique(a)) and \
        len(np.unique(a)) == len(np.unique(b))


def test_merge_along_graph_joins_the_part_its_edges_point_to():
    # fine clusters 0 | 1 | 2 | 3; the graph ties 0-2 and 1-3 (by hand: merged {0,2}, {1,3})
    labels = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    neighbors = np.array([[1, 4], [0, 5], [3, 6], [2, 7], [5, 0], [4, 1], [7, 2], [6, 3]])
    merged = merge_along_graph(labels, neighbors, 2)
    np.testing.assert_array_equal(merged, [0, 0, 1, 1, 0, 0, 1, 1])
    # -1 marks a missing neighbour; weights steer: the heavy 0-3 edge now wins
    neighbors = np.array([[1, 6], [0, -1], [3, -1], [2, -1], [5, -1], [4, -1], [7, 0], [6, -1]])
    weights = np.array([[1, 5.0], [1, 0], [1, 0], [1, 0], [1, 0], [1, 0], [1, 5.0], [1, 0]])
    merged = merge_along_graph(labels, neighbors, 3, weights=weights)
    np.testing.assert_array_equal(merged, [0, 0, 1, 1, 2, 2, 0, 0])
    # as many groups as fine clusters: unchanged
    np.testing.assert_array_equal(merge_along_graph(labels, neighbors, 4), labels)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_merge_along_graph_matches_greedy_average_linkage(seed):
    rng = np.random.default_rng(seed)
    n, m, k = 60, 7, 4
    labels = rng.permutation(np.arange(n) % m)
    neighbors = rng.integers(0, n, size=(n, k))
    weights = rng.random((n, k))  # continuous weights: no ties between candidate pairs
    for n_clusters in (2, 3, 5):
        got = merge_along_graph(labels, neighbors, n_clusters, weights=weights)
        want = _greedy_average_merge(labels, neighbors, weights, n_clusters)
        assert len(np.unique(got)) == n_clusters
        assert _same_partition(got, want)
        # numbered by smallest fine label
        firsts = [labels[got == g].min() for g in range(n_clusters)]
        assert firsts == sorted(firsts)


def test_merge_along_graph_rejects_bad_input():
    labels = np.array([0, 0, 1, 1, 2, 2])
    nb = np.array([[1], [0], [3], [2], [5], [4]])
    with pytest.raises(GraphclustError, match="n_clusters must be an integer in \\[2, 3\\]"):
        merge_along_graph(labels, nb, 4)
    with pytest.raises(GraphclustError, match="n_clusters"):
        merge_along_graph(labels, nb, 1)
    with pytest.raises(GraphclustError, match="missing \\[1\\]"):
        merge_along_graph(np.array([0, 0, 2, 2, 2, 2]), nb, 2)
    with pytest.raises(GraphclustError, match="shape \\(6, k\\)"):
        merge_along_graph(labels, nb[:5], 2)
    with pytest.raises(GraphclustError, match="lie in \\[0, 6\\)"):
        merge_along_graph(labels, nb + 3, 2)
    with pytest.raises(GraphclustError, match="weights must be finite"):
        merge_along_graph(labels, nb, 2, weights=np.full((6, 1), np.nan))
    with pytest.raises(GraphclustError, match="1-D integer"):
        merge_along_graph(labels.astype(float), nb, 2)

"""The DGG objective and pi update against the formulas of DGG.md, in plain torch."""

import math

import numpy as np
import pytest
import torch

from graphclust.graph.graph import KNNGraph
from graphclust.models.batching import NeighborBatches
from graphclust.models.mixture import build_gmvae
from graphclust.nn.dgg import (
    PI_FLOOR,
    DGGObjective,
    MixingPropagation,
    mixing_matrix,
    normalize_edges,
)
from graphclust.nn.likelihood import BernoulliLikelihood, GaussianLikelihood
from graphclust.utils import GraphclustError

torch.set_default_dtype(torch.float32)


def tiny_model(likelihood, n_features=4, K=2, M=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    model = build_gmvae(n_features, K, likelihood, latent_dim=M, hidden=(3,), generator=g)
    with torch.no_grad():  # a prior that is not the trivial one
        model.prior.means.copy_(torch.randn(K, M, generator=g))
        model.prior.log_vars.copy_(0.3 * torch.randn(K, M, generator=g))
        model.prior.mixing_logits.copy_(torch.randn(K, generator=g))
    return model


def latent_term_by_hand(mu, logvar, gamma, means, log_vars):
    """A_j written term by term as in DGG.md section 2."""
    n, K = gamma.shape
    out = torch.zeros(n)
    for j in range(n):
        acc = 0.0
        for k in range(K):
            s2k = log_vars[k].exp()
            inner = log_vars[k] + logvar[j].exp() / s2k + (mu[j] - means[k]) ** 2 / s2k
            acc = acc - 0.5 * gamma[j, k] * inner.sum()
        acc = acc - (gamma[j] * gamma[j].log()).sum()
        acc = acc + 0.5 * (1 + logvar[j]).sum()
        out[j] = acc
    return out


def bernoulli_by_hand(x, logits):
    p = torch.sigmoid(logits)
    return (x * p.log() + (1 - x) * (1 - p).log()).sum(-1)


# 3 nodes: 0 <- {1: 0.25, 2: 0.75}, 1 <- {0: 1.0}, 2 <- {0: 0.5, 1: 0.5}
EDGES = torch.tensor([[1, 2, 0, 0, 1], [0, 0, 1, 2, 2]])
WEIGHTS = torch.tensor([0.25, 0.75, 1.0, 0.5, 0.5])


def three_node_setup():
    model = tiny_model(BernoulliLikelihood())
    x = torch.rand(3, 4, generator=torch.Generator().manual_seed(3))
    terms = model.node_terms(x, sample=True, generator=torch.Generator().manual_seed(4))
    pi = torch.tensor([[0.2, 0.8], [0.5, 0.5], [0.9, 0.1]])
    return model, x, terms, pi


def test_message_equals_neighbour_elbo_by_hand():
    model, x, terms, pi = three_node_setup()
    A = latent_term_by_hand(terms.mu, terms.logvar, terms.gamma, model.prior.means,
                            model.prior.log_vars)
    torch.testing.assert_close(terms.latent_term, A, rtol=1e-5, atol=1e-5)

    def L(i, j):  # L(x_i, x_j) = E_q(z|x_j) ln p(x_i|z) + A_j + sum_k gamma_jk ln pi_ik
        return bernoulli_by_hand(x[i : i + 1], terms.recon[j : j + 1])[0] + A[j] + (
            terms.gamma[j] * pi[i].log()
        ).sum()

    obj = DGGObjective(BernoulliLikelihood())
    m = obj.edge_messages(x, terms.recon, terms.latent_term, terms.gamma, pi.log(), EDGES)
    expected = torch.stack([L(int(i), int(j)) for j, i in EDGES.T])
    torch.testing.assert_close(m, expected, rtol=1e-5, atol=1e-4)

    # per node: 1/2 L(x_i) + 1/2 sum_j w_ij L(x_i, x_j), with L(x_i) = L(x_i, x_i)
    out = obj(x, terms.recon, terms.latent_term, terms.gamma, pi.log(), EDGES, WEIGHTS)
    by_node = [
        0.5 * L(0, 0) + 0.5 * (0.25 * L(0, 1) + 0.75 * L(0, 2)),
        0.5 * L(1, 1) + 0.5 * L(1, 0),
        0.5 * L(2, 2) + 0.5 * (0.5 * L(2, 0) + 0.5 * L(2, 1)),
    ]
    torch.testing.assert_close(out, torch.stack(by_node), rtol=1e-5, atol=1e-4)


def test_unnormalised_weights_are_row_normalised():
    _, x, terms, pi = three_node_setup()
    obj = DGGObjective(BernoulliLikelihood())
    args = (x, terms.recon, terms.latent_term, terms.gamma, pi.log(), EDGES)
    torch.testing.assert_close(obj(*args, WEIGHTS * 7.0), obj(*args, WEIGHTS))
    ei, ew = normalize_edges(EDGES, WEIGHTS * 3, n_targets=3)
    assert ei.shape == (2, 8)
    np.testing.assert_allclose(ew.numpy(), [0.125, 0.375, 0.5, 0.25, 0.25, 0.5, 0.5, 0.5])


def test_no_neighbours_is_the_vade_elbo():
    lik = GaussianLikelihood()
    model = tiny_model(lik, n_features=5, K=3, M=2, seed=1)
    x = torch.randn(6, 5, generator=torch.Generator().manual_seed(2))
    terms = model.node_terms(x, sample=True, generator=torch.Generator().manual_seed(5))
    log_pi = model.prior.log_weights()
    obj = DGGObjective(lik)(
        x, terms.recon, terms.latent_term, terms.gamma, log_pi.expand(6, -1),
        torch.empty(2, 0, dtype=torch.long),
    )
    # VaDE ELBO (Jiang et al. 2017, eq. 10) with all constants, from torch.distributions
    mu, std = terms.mu, (0.5 * terms.logvar).exp()
    rec = torch.distributions.Normal(terms.recon, 1.0).log_prob(x).sum(-1)
    means, var = model.prior.means, model.prior.log_vars.exp()
    e_log_pz_c = -0.5 * (
        math.log(2 * math.pi) + var.log() + (std.unsqueeze(1) ** 2 + (mu.unsqueeze(1) - means) ** 2) / var
    ).sum(-1)  # (n, K)
    g = terms.gamma
    elbo = (
        rec
        + (g * e_log_pz_c).sum(-1)
        + (g * log_pi).sum(-1)
        + torch.distributions.Normal(mu, std).entropy().sum(-1)
        - (g * g.log()).sum(-1)
    )
    torch.testing.assert_close(obj, elbo, rtol=1e-5, atol=1e-4)


def test_pi_rows_are_simplices_and_equal_shared_gamma():
    mix = MixingPropagation()
    gamma = torch.softmax(torch.randn(3, 4, generator=torch.Generator().manual_seed(0)), -1)
    pi = mix(gamma, EDGES, WEIGHTS)
    torch.testing.assert_close(pi.sum(1), torch.ones(3))
    assert (pi >= 0).all()
    torch.testing.assert_close(pi[1], 0.5 * gamma[1] + 0.5 * gamma[0])
    torch.testing.assert_close(pi[0], 0.5 * gamma[0] + 0.5 * (0.25 * gamma[1] + 0.75 * gamma[2]))
    shared = gamma[:1].expand(3, -1)
    torch.testing.assert_close(mix(shared, EDGES, WEIGHTS), shared)
    # a node without neighbours keeps its own gamma
    torch.testing.assert_close(mix(gamma, EDGES[:, :2], WEIGHTS[:2])[1:], gamma[1:])


def test_pi_sparse_matmul_equals_edge_propagation():
    g = KNNGraph(np.array([[1, 2], [0, 2], [0, 1], [2, 0]]),
                 np.array([[0.2, 0.8], [1, 1], [3, 1], [0.5, 0.5]], np.float32),
                 np.ones((4, 2), np.float32))
    gamma = torch.softmax(torch.randn(4, 3, generator=torch.Generator().manual_seed(1)), -1)
    mix = MixingPropagation()
    ei, ew = g.to_edge_index()
    P = mixing_matrix(g)
    torch.testing.assert_close(mix(gamma, P), mix(gamma, ei, ew))
    torch.testing.assert_close(P.to_dense().sum(1), torch.ones(4))


def test_full_and_sampled_batchings_agree():
    n, k, D = 12, 4, 5
    rng = np.random.default_rng(0)
    idx = np.stack([rng.choice(np.delete(np.arange(n), i), k, replace=False) for i in range(n)])
    w = rng.uniform(0.1, 1.0, (n, k)).astype(np.float32)
    w /= w.sum(1, keepdims=True)
    graph = KNNGraph(idx, w, np.ones((n, k), np.float32))
    model = tiny_model(BernoulliLikelihood(), n_features=D, K=3)
    X = torch.rand(n, D, generator=torch.Generator().manual_seed(1))
    pi = torch.softmax(torch.randn(n, 3, generator=torch.Generator().manual_seed(2)), -1)
    obj = DGGObjective(model.likelihood)

    with torch.no_grad():  # z = mu: only the edge sampling is random; node terms are per node
        t = model.node_terms(X, sample=False)

    def per_anchor(batches):
        out = torch.zeros(n)
        with torch.no_grad():
            for b in batches:
                ids = b.node_ids
                val = obj(b.x, t.recon[ids], t.latent_term[ids], t.gamma[ids], pi[ids].log(),
                          b.edge_index, b.edge_weight, n_targets=b.n_anchors)
                out[ids[: b.n_anchors]] = val
        return out

    full = per_anchor(NeighborBatches(X, graph, batch_size=n, generator=torch.Generator()))
    # the partition into batches does not matter with full neighbour lists
    full5 = per_anchor(NeighborBatches(X, graph, batch_size=5,
                                       generator=torch.Generator().manual_seed(3)))
    torch.testing.assert_close(full5, full)
    # weighted edge sampling: unbiased, so the mean over draws converges to the full value
    gen = torch.Generator().manual_seed(4)
    draws = torch.stack([
        per_anchor(NeighborBatches(X, graph, batch_size=n, sample=2, generator=gen))
        for _ in range(200)
    ])
    sem = draws.std(0) / math.sqrt(len(draws))
    assert ((draws.mean(0) - full).abs() <= 4 * sem + 1e-4).all()
    assert (draws.std(0) > 0).any()  # it did sample


def test_permutation_equivariance():
    _, x, terms, pi = three_node_setup()
    obj = DGGObjective(BernoulliLikelihood())
    out = obj(x, terms.recon, terms.latent_term, terms.gamma, pi.log(), EDGES, WEIGHTS)
    perm = torch.tensor([2, 0, 1])  # new node a is old node perm[a]
    inv = torch.argsort(perm)
    edges = inv[EDGES]
    out_p = obj(x[perm], terms.recon[perm], terms.latent_term[perm], terms.gamma[perm],
                pi[perm].log(), edges, WEIGHTS)
    torch.testing.assert_close(out_p, out[perm])
    mix = MixingPropagation()
    torch.testing.assert_close(mix(terms.gamma[perm], edges, WEIGHTS),
                               mix(terms.gamma, EDGES, WEIGHTS)[perm])


def test_targets_must_come_first_and_pi_floor():
    obj = DGGObjective(BernoulliLikelihood())
    x = torch.rand(3, 2)
    with pytest.raises(GraphclustError, match="anchors first"):
        obj(x, x, torch.zeros(3), torch.full((3, 2), 0.5), torch.zeros(3, 2), EDGES, n_targets=1)
    with pytest.raises(GraphclustError, match="self_weight"):
        DGGObjective(BernoulliLikelihood(), self_weight=0.0)
    assert math.isfinite(math.log(PI_FLOOR))

"""The plug-in neighbour ELBO against hand computations and against DGG's objective."""

import math

import pytest
import torch

from graphclust.models.mixture import build_gmvae
from graphclust.nn.dgg import DGGObjective
from graphclust.nn.graph_reg import GraphTerms, NeighborELBO
from graphclust.nn.likelihood import BernoulliLikelihood, GaussianLikelihood
from graphclust.utils import GraphclustError

# 3 nodes: 0 <- {1: 0.25, 2: 0.75}, 1 <- {0: 1.0}, 2 <- {0: 0.5, 1: 0.5}
EDGES = torch.tensor([[1, 2, 0, 0, 1], [0, 0, 1, 2, 2]])
WEIGHTS = torch.tensor([0.25, 0.75, 1.0, 0.5, 0.5])


def gaussian_ll(x, mean):  # unit-variance Gaussian log-likelihood, written out
    return -0.5 * ((x - mean) ** 2 + math.log(2 * math.pi)).sum(-1)


def random_terms(n=3, C=2, D=4, K=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, D, generator=g)
    gamma = torch.softmax(torch.randn(n, K, generator=g), -1)
    rho = torch.softmax(torch.randn(n, C, generator=g), -1)
    terms = GraphTerms(
        own=torch.randn(n, generator=g), gamma=gamma, latent_term=torch.randn(n, generator=g),
        recon=torch.randn(n, C, D, generator=g), recon_weight=rho,
    )
    log_pi = torch.log_softmax(torch.randn(n, K, generator=g), -1)
    return x, terms, log_pi


def test_objective_by_hand_with_two_reconstructions_per_node():
    x, t, log_pi = random_terms()
    layer = NeighborELBO(GaussianLikelihood(), self_weight=0.5)

    def m(i, j):  # sum_c rho_jc ln p(x_i | xhat_jc) + A_j + <gamma_j, ln pi_i>
        rec = sum(t.recon_weight[j, c] * gaussian_ll(x[i], t.recon[j, c]) for c in range(2))
        return rec + t.latent_term[j] + (t.gamma[j] * log_pi[i]).sum()

    expected = torch.stack([
        0.5 * t.own[0] + 0.5 * (0.25 * m(0, 1) + 0.75 * m(0, 2)),
        0.5 * t.own[1] + 0.5 * m(1, 0),
        0.5 * t.own[2] + 0.5 * (0.5 * m(2, 0) + 0.5 * m(2, 1)),
    ])
    torch.testing.assert_close(layer(x, t, log_pi, EDGES, WEIGHTS), expected)
    msgs = layer.edge_messages(x, t, log_pi, EDGES)
    torch.testing.assert_close(msgs[0], m(0, 1))
    # unnormalised weights give the same result (normalised per target)
    torch.testing.assert_close(layer(x, t, log_pi, EDGES, 4 * WEIGHTS), expected)


def test_equals_dgg_objective_with_one_reconstruction_and_dgg_self_message():
    g = torch.Generator().manual_seed(1)
    model = build_gmvae(4, 2, BernoulliLikelihood(), latent_dim=2, hidden=(3,), generator=g)
    x = torch.rand(3, 4, generator=g)
    nt = model.node_terms(x, sample=True, generator=g)
    log_pi = torch.log(torch.tensor([[0.2, 0.8], [0.5, 0.5], [0.9, 0.1]]))
    dgg = DGGObjective(BernoulliLikelihood())
    loops = torch.arange(3).repeat(2, 1)
    own = dgg.edge_messages(x, nt.recon, nt.latent_term, nt.gamma, log_pi, loops)
    terms = GraphTerms(own=own, gamma=nt.gamma, latent_term=nt.latent_term,
                       recon=nt.recon.unsqueeze(1))
    ours = NeighborELBO(BernoulliLikelihood())(x, terms, log_pi, EDGES, WEIGHTS)
    ref = dgg(x, nt.recon, nt.latent_term, nt.gamma, log_pi, EDGES, WEIGHTS)
    torch.testing.assert_close(ours, ref)


@pytest.mark.parametrize("case", ["zero_weights", "self_edges", "no_edges", "weight_one"])
def test_zero_weight_or_self_only_neighbours_give_the_model_objective(case):
    x, t, log_pi = random_terms()
    layer = NeighborELBO(GaussianLikelihood(), self_weight=1.0 if case == "weight_one" else 0.5)
    if case == "zero_weights":
        ei, ew = EDGES, torch.zeros(EDGES.shape[1])
    elif case == "self_edges":
        ei, ew = torch.tensor([[0, 1, 2, 2], [0, 1, 2, 2]]), torch.tensor([1.0, 0.3, 0.5, 0.5])
    elif case == "no_edges":
        ei, ew = torch.zeros(2, 0, dtype=torch.long), torch.zeros(0)
    else:
        ei, ew = EDGES, WEIGHTS
    torch.testing.assert_close(layer(x, t, log_pi, ei, ew), t.own)


def test_model_without_decoder_gets_posterior_agreement():
    x, t, log_pi = random_terms()
    entropy = -(t.gamma * t.gamma.log()).sum(-1)
    t = t._replace(recon=None, recon_weight=None, latent_term=entropy)
    layer = NeighborELBO(None, self_weight=0.5)
    out = layer(x, t, log_pi, EDGES, WEIGHTS)

    def kl(j, i):  # -m_ij = KL(gamma_j || pi_i)
        return (t.gamma[j] * (t.gamma[j].log() - log_pi[i])).sum()

    torch.testing.assert_close(out[1], 0.5 * t.own[1] - 0.5 * kl(0, 1))


def test_only_target_rows_are_read_and_bad_input():
    x, t, log_pi = random_terms(n=4)
    edges = torch.tensor([[2, 3], [0, 1]])  # nodes 2, 3 are neighbours only
    layer = NeighborELBO(GaussianLikelihood())
    out = layer(x, t, log_pi, edges, n_targets=2)
    assert out.shape == (2,)
    t_nan = t._replace(own=torch.cat([t.own[:2], torch.full((2,), float("nan"))]))
    torch.testing.assert_close(layer(x, t_nan, log_pi, edges, n_targets=2), out)
    with pytest.raises(GraphclustError, match="one row per node"):
        layer(x, t._replace(gamma=t.gamma[:3]), log_pi, edges, n_targets=2)
    with pytest.raises(GraphclustError, match="likelihood"):
        NeighborELBO(None)(x, t, log_pi, edges, n_targets=2)
    with pytest.raises(GraphclustError, match="n_outputs"):
        layer(x, t._replace(recon=t.recon[:, 0]), log_pi, edges, n_targets=2)
    with pytest.raises(GraphclustError, match="self_weight"):
        NeighborELBO(GaussianLikelihood(), self_weight=0.0)

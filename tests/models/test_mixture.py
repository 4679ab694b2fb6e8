import numpy as np
import pytest
import torch

from graphclust.models.mixture import (
    ClassifierHead,
    GaussianMixturePrior,
    GMMPosterior,
    build_gmvae,
)
from graphclust.nn.likelihood import BernoulliLikelihood
from graphclust.utils import GraphclustError


def test_set_parameters_and_component_density():
    prior = GaussianMixturePrior(2, 2)
    prior.set_parameters([[0, 0], [3, 1]], [[1, 1], [4, 0.25]], [1, 3])
    torch.testing.assert_close(prior.log_weights().exp(), torch.tensor([0.25, 0.75]))
    z = torch.tensor([[1.0, 2.0]])
    ref = torch.stack([
        torch.distributions.Normal(torch.tensor([0.0, 0.0]), torch.tensor([1.0, 1.0])).log_prob(z).sum(),
        torch.distributions.Normal(torch.tensor([3.0, 1.0]), torch.tensor([2.0, 0.5])).log_prob(z).sum(),
    ])
    torch.testing.assert_close(prior.component_log_prob(z)[0], ref)
    # Bayes' rule
    post = torch.softmax(ref + torch.tensor([0.25, 0.75]).log(), 0)
    torch.testing.assert_close(prior.log_posterior(z)[0].exp(), post)
    with pytest.raises(GraphclustError, match="shapes"):
        prior.set_parameters(np.zeros((3, 2)), np.ones((3, 2)), np.ones(3))


def test_latent_term_is_a_monte_carlo_expectation():
    """A = E_q[ln p(z|c)] + E ln-entropy terms: check against sampling z ~ q."""
    prior = GaussianMixturePrior(2, 3)
    prior.set_parameters(np.array([[0, 1, 2], [1, -1, 0]]), np.array([[1, 2, 0.5], [0.3, 1, 1]]),
                         np.array([0.5, 0.5]))
    mu, logvar = torch.tensor([[0.5, 0.0, 1.0]]), torch.tensor([[-1.0, 0.0, -0.5]])
    gamma = torch.tensor([[0.3, 0.7]])
    A = prior.latent_term(mu, logvar, gamma, gamma.log())
    g = torch.Generator().manual_seed(0)
    z = mu + (0.5 * logvar).exp() * torch.randn(200_000, 3, generator=g)
    q = torch.distributions.Normal(mu, (0.5 * logvar).exp()).log_prob(z).sum(-1)
    mc = ((gamma * prior.component_log_prob(z)).sum(-1) - q).mean() - (gamma * gamma.log()).sum()
    assert A.item() == pytest.approx(mc.item(), abs=0.02)


def test_posteriors_share_one_interface():
    prior = GaussianMixturePrior(3, 2)
    mu, z = torch.randn(4, 2), torch.randn(4, 2)
    head = ClassifierHead(2, 3, torch.Generator().manual_seed(0))
    for post in (head, GMMPosterior()):
        lg = post.log_gamma(mu, z, prior)
        assert lg.shape == (4, 3)
        torch.testing.assert_close(lg.exp().sum(1), torch.ones(4))
    torch.testing.assert_close(GMMPosterior().log_gamma(mu, z, prior), prior.log_posterior(z))


def test_gmvae_node_terms_and_prediction_use_the_mean():
    model = build_gmvae(5, 3, BernoulliLikelihood(), latent_dim=2, hidden=(4,), posterior="gmm",
                        generator=torch.Generator().manual_seed(0))
    x = torch.rand(6, 5)
    t = model.node_terms(x, sample=False)
    assert t.recon.shape == (6, 5) and t.gamma.shape == (6, 3) and t.latent_term.shape == (6,)
    torch.testing.assert_close(model.log_gamma(x), t.log_gamma)
    s1 = model.node_terms(x, generator=torch.Generator().manual_seed(1))
    s2 = model.node_terms(x, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(s1.recon, s2.recon)
    with pytest.raises(GraphclustError, match="posterior"):
        build_gmvae(5, 3, BernoulliLikelihood(), posterior="kmeans")
    assert torch.isfinite(t.latent_term).all()

"""k-DVAE / k-DAE: the hard-max ELBO over 2 pairs and eq. 8 recomputed by hand, pair pretraining."""

import math

import numpy as np
import pytest
import torch

from graphclust.models.kdvae import (
    build_k_autoencoders,
    gaussian_kl_standard,
    pretrain_pairs,
)
from graphclust.nn.likelihood import GaussianLikelihood
from graphclust.utils import GraphclustError


def gaussian_ll(x, mean):
    return -0.5 * ((x - mean) ** 2 + math.log(2 * math.pi)).sum(-1)


def lin(layer, k, h):
    return h @ layer.weight[k] + layer.bias[k, 0]


def pair_by_hand(model, k, x, eps=None):
    """Encoder, (sample), decoder of pair k with plain matmuls."""
    h = torch.relu(lin(model.encoder.trunk.layers[0], k, x))
    mu, logvar = lin(model.encoder.mu, k, h), lin(model.encoder.logvar, k, h)
    z = mu if eps is None else mu + torch.exp(0.5 * logvar) * eps
    r = torch.relu(lin(model.decoder.net.layers[0], k, z))
    return mu, logvar, lin(model.decoder.net.layers[1], k, r)


def tiny(variational=True, seed=0):
    return build_k_autoencoders(3, 2, GaussianLikelihood(), latent_dim=2, hidden=(4,),
                                variational=variational, generator=torch.Generator().manual_seed(seed))


def test_hard_max_elbo_over_two_pairs_by_hand():
    model = tiny()
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(1))
    terms = model.batch_terms(x, 5, torch.Generator().manual_seed(2), neighbor_terms=True)
    eps = torch.randn((2, 5, 2), generator=torch.Generator().manual_seed(2))  # same draws
    elbo, recon = [], []
    for k in range(2):
        mu, logvar, out = pair_by_hand(model, k, x, eps[k])
        kl = 0.5 * (mu**2 + logvar.exp() - 1 - logvar).sum(-1)
        elbo.append(gaussian_ll(x, out) - kl)
        recon.append(out)
        torch.testing.assert_close(gaussian_kl_standard(mu, logvar), kl)
    elbo = torch.stack(elbo, 1)  # (n, 2)
    best = elbo.argmax(1)
    torch.testing.assert_close(terms.own, elbo.max(1).values - math.log(2))
    torch.testing.assert_close(terms.gamma, torch.nn.functional.one_hot(best, 2).float())
    rows = torch.arange(5)
    torch.testing.assert_close(terms.recon[:, 0], torch.stack(recon)[best, rows])
    # own = R + A + <gamma, ln alpha> of the winning pair: what the regulariser relies on
    R = gaussian_ll(x, terms.recon[:, 0])
    torch.testing.assert_close(terms.own, R + terms.latent_term - math.log(2))


def test_eq8_scores_and_soft_assignments_by_hand():
    model = tiny()
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(3))
    scores = []
    for k in range(2):
        mu, logvar, out = pair_by_hand(model, k, x)
        sigma = torch.exp(0.5 * logvar)
        scores.append(gaussian_ll(x, out) - 0.5 * (mu**2).sum(-1) + sigma.log().sum(-1))
    scores = torch.stack(scores, 1)
    torch.testing.assert_close(model.cluster_scores(x), scores)
    torch.testing.assert_close(model.log_gamma(x), torch.log_softmax(scores, -1))
    emb = model.embed(x)
    assert emb.shape == (4, 4)
    torch.testing.assert_close(emb[:, 2:], pair_by_hand(model, 1, x)[0])


def test_kdae_is_reconstruction_only():
    model = tiny(variational=False)
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(4))
    rec = torch.stack([gaussian_ll(x, pair_by_hand(model, k, x)[2]) for k in range(2)], 1)
    terms = model.batch_terms(x, 5, torch.Generator().manual_seed(0))
    torch.testing.assert_close(terms.own, rec.max(1).values - math.log(2))
    torch.testing.assert_close(terms.latent_term, torch.zeros(5))
    assert terms.recon is None  # not asked for
    torch.testing.assert_close(model.cluster_scores(x), rec)


def test_pair_pretraining_specialises_each_pair_on_its_cluster():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 20)
    X = torch.from_numpy((rng.normal(size=(40, 3)) * 0.3 + 6 * np.eye(2, 3)[labels]).astype(np.float32))
    model = tiny(variational=False)
    losses = pretrain_pairs(model, X, labels, epochs=150, batch_size=20, lr=1e-2,
                            generator=torch.Generator().manual_seed(0))
    assert losses[-1] < losses[0]
    pred = model.log_gamma(X).argmax(1).numpy()
    np.testing.assert_array_equal(pred, labels)
    with pytest.raises(GraphclustError, match="labels must lie"):
        pretrain_pairs(model, X, labels + 1, epochs=1)
    with pytest.raises(GraphclustError, match="shape"):
        pretrain_pairs(model, X, labels[:5], epochs=1)

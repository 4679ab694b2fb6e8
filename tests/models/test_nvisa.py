"""The slides' GMVAE (NVISA): VIMCO log weights and bound, EnumY terms and std annealing by hand."""

import math

import numpy as np
import pytest
import torch

from graphclust.models.nvisa import StdAnnealing, build_nvisa, gaussian_kl
from graphclust.models.pretrain import InitResult
from graphclust.nn.likelihood import GaussianLikelihood, LearnedStdGaussianLikelihood
from graphclust.nn.vimco import log_mean_exp
from graphclust.utils import GraphclustError

LOG_2PI = math.log(2 * math.pi)


def normal_lp(z, mean, var):  # ln N(z; mean, diag var), written out
    return (-0.5 * ((z - mean) ** 2 / var + var.log() + LOG_2PI)).sum(-1)


def tiny(likelihood=None, n_samples=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    model = build_nvisa(3, 2, likelihood or GaussianLikelihood(), latent_dim=2, hidden=(4,),
                        n_samples=n_samples, annealing=StdAnnealing(0.3, 0.05), generator=g)
    init = InitResult(np.array([0, 1]), np.array([[0.5, -1.0], [-0.3, 0.8]], np.float32),
                      np.array([[0.4, 0.9], [1.5, 0.2]], np.float32), np.array([0.3, 0.7], np.float32))
    model.start_from(init, std_ratio=0.2)
    with torch.no_grad():  # conditional heads that differ per cluster
        model.cond_mean.weight.add_(0.3 * torch.randn(model.cond_mean.weight.shape, generator=g))
        model.cond_std.weight.add_(0.3 * torch.randn(model.cond_std.weight.shape, generator=g))
    return model


def by_hand(model, x, y, eps):
    """ln w of samples (y, eps) from the formula, with plain tensor ops."""
    enc = model.encoder
    h = torch.relu(x @ enc.trunk[0][0].weight.T + enc.trunk[0][0].bias)
    mu = enc.mu(h)
    log_qy = torch.log_softmax(model.head.linear(mu), -1)
    m = (h @ model.cond_mean.weight.T + model.cond_mean.bias).view(-1, 2, 2)
    s = torch.nn.functional.softplus(h @ model.cond_std.weight.T + model.cond_std.bias).view(-1, 2, 2)
    s = s + model.eps_z
    out = torch.zeros(y.shape)
    for i in range(y.shape[0]):
        for j in range(y.shape[1]):
            k = y[i, j]
            z = m[i, k] + s[i, k] * eps[i, j]
            recon = model.decoder(z.unsqueeze(0))[0]
            log_px = -0.5 * ((x[i] - recon) ** 2 + LOG_2PI).sum()
            log_pz = normal_lp(z, model.prior.means[k], model.prior.log_vars[k].exp())
            log_py = torch.log_softmax(model.prior.mixing_logits, 0)[k]
            log_qz = normal_lp(z, m[i, k], s[i, k] ** 2)
            out[i, j] = log_px + log_pz + log_py - log_qz - log_qy[i, k]
    return out, log_qy, m, s


def test_log_weights_by_hand():
    model = tiny()
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([[0, 1, 1], [1, 1, 0], [0, 0, 0], [1, 0, 1]])
    eps = torch.randn(4, 3, 2, generator=torch.Generator().manual_seed(2))
    log_w, log_qy = model.log_weights(x, model.conditional(x), y, eps)
    hand, lq, _, _ = by_hand(model, x, y, eps)
    torch.testing.assert_close(log_w, hand, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(log_qy, lq.gather(1, y))


def test_own_term_is_the_vimco_bound_of_the_drawn_samples():
    model = tiny(n_samples=3)
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(1))
    terms = model.batch_terms(x, 4, torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)  # the same draws, in the same order
    qy = model.conditional(x).log_qy.exp().detach()
    y = torch.multinomial(qy, 3, replacement=True, generator=g)
    eps = torch.randn((4, 3, 2), generator=g)
    hand, _, _, _ = by_hand(model, x, y, eps)
    torch.testing.assert_close(terms.own, log_mean_exp(hand), rtol=1e-5, atol=1e-5)
    assert terms.recon is None and terms.own.requires_grad


def test_enumerated_terms_for_the_regulariser_by_hand():
    model = tiny()
    x = torch.randn(3, 3, generator=torch.Generator().manual_seed(1))
    terms = model.batch_terms(x, 2, torch.Generator().manual_seed(0), neighbor_terms=True)
    _, log_qy, m, s = by_hand(model, x, torch.zeros(3, 1, dtype=torch.long), torch.zeros(3, 1, 2))
    gamma = log_qy.exp()
    torch.testing.assert_close(terms.gamma, gamma)
    torch.testing.assert_close(terms.recon_weight, gamma)
    assert terms.recon.shape == (3, 2, 3)
    kl = torch.zeros(3, 2)
    for i in range(3):
        for k in range(2):
            pv = model.prior.log_vars[k].exp()
            kl[i, k] = 0.5 * (pv.log() - (s[i, k] ** 2).log() + (s[i, k] ** 2 + (m[i, k] - model.prior.means[k]) ** 2) / pv - 1).sum()
    torch.testing.assert_close(gaussian_kl(m, s, model.prior.means, model.prior.log_vars), kl)
    expected = -(gamma * kl).sum(-1) - (gamma * log_qy).sum(-1)
    torch.testing.assert_close(terms.latent_term, expected, rtol=1e-5, atol=1e-5)
    assert terms.own[2].item() == 0.0  # only the 2 targets get a VIMCO bound


def test_std_annealing_schedule_and_hook():
    ann = StdAnnealing(1.0, 0.1)
    assert ann.value(0, 10) == pytest.approx(1.0)
    assert ann.value(5, 10) == pytest.approx(0.55)
    assert ann.value(10, 10) == pytest.approx(0.1)
    short = StdAnnealing(1.0, 0.1, epochs=2)
    assert short.value(1, 10) == pytest.approx(0.55) and short.value(7, 10) == pytest.approx(0.1)
    lik = LearnedStdGaussianLikelihood(eps=0.3)
    model = tiny(likelihood=lik)
    model.start_epoch(5, 10)
    assert model.eps_z == pytest.approx(0.175) and lik.eps == pytest.approx(0.175)
    with pytest.raises(GraphclustError, match="start >= end"):
        StdAnnealing(0.1, 0.5).validate()
    with pytest.raises(GraphclustError, match="n_samples"):
        tiny(n_samples=1)


def test_start_from_copies_the_autoencoder_mean_into_every_cluster():
    g = torch.Generator().manual_seed(0)
    model = build_nvisa(3, 2, GaussianLikelihood(), latent_dim=2, hidden=(4,), n_samples=2,
                        annealing=StdAnnealing(0.2, 0.2), generator=g)
    init = InitResult(np.array([0, 1]), np.zeros((2, 2), np.float32),
                      np.full((2, 2), 0.5, np.float32), np.array([0.5, 0.5], np.float32))
    model.start_from(init, std_ratio=0.08)
    x = torch.randn(5, 3, generator=g)
    post = model.conditional(x)
    for k in range(2):
        torch.testing.assert_close(post.mean[:, k], model.encoder.embed(x))
    torch.testing.assert_close(post.std, torch.full((5, 2, 2), math.sqrt(0.08 * 0.5) + 0.2))
    torch.testing.assert_close(model.embed(x), model.encoder.embed(x))  # E_q[z] = the AE mean

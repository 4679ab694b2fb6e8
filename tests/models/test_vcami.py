"""VCAMI's per-row objective by hand, and the augmentations it uses (graphclust.data.augment)."""

import math

import numpy as np
import pytest
import torch

from graphclust.data.augment import ImageAugment, VectorAugment, default_augmenter
from graphclust.models.vcami import VCAMIWeights, build_vcami
from graphclust.nn.likelihood import GaussianLikelihood
from graphclust.nn.mutual_info import discrete_mutual_information, joint_assignments
from graphclust.utils import GraphclustError

LOG_2PI = math.log(2 * math.pi)


def tiny(weights=VCAMIWeights(lmi=0.5, cmi=1.0, gmm=0.2, reg=0.3)):
    g = torch.Generator().manual_seed(0)
    model = build_vcami(4, 3, GaussianLikelihood(), VectorAugment(0.2, 0.1), latent_dim=2,
                        hidden=(5,), disc_hidden=(6,), weights=weights, generator=g)
    with torch.no_grad():
        model.prior.means.copy_(torch.randn(3, 2, generator=g))
        model.prior.log_vars.copy_(0.3 * torch.randn(3, 2, generator=g))
    return model


def log_sigmoid(t):
    return -torch.nn.functional.softplus(-t)


def test_terms_by_hand():
    model = tiny()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 4, generator=g)
    mu, logvar = torch.randn(4, 2, generator=g), 0.2 * torch.randn(4, 2, generator=g)
    z = torch.randn(4, 2, generator=g)
    lg = torch.log_softmax(torch.randn(4, 3, generator=g), -1)
    lg_aug = torch.log_softmax(torch.randn(4, 3, generator=g), -1)
    t = model.terms(x, z, mu, logvar, lg, lg_aug)
    nxt = [3, 0, 1, 2]  # row i's negative pairs x_i with z of row i - 1 (a roll by one)
    Tg, Tl = model.global_disc, model.local_disc
    h = torch.relu(x @ model.encoder.trunk[0][0].weight.T + model.encoder.trunk[0][0].bias)
    gamma = lg.exp()
    for i in range(4):
        pos, neg = Tg(x[i : i + 1], z[i : i + 1]), Tg(x[i : i + 1], z[nxt[i] : nxt[i] + 1])
        assert t.gmi[i].item() == pytest.approx((log_sigmoid(pos) + torch.log(1 - torch.sigmoid(neg))).item(), rel=1e-5)
        pos, neg = Tl(h[i : i + 1], z[i : i + 1]), Tl(h[i : i + 1], z[nxt[i] : nxt[i] + 1])
        assert t.lmi[i].item() == pytest.approx((log_sigmoid(pos) + torch.log(1 - torch.sigmoid(neg))).item(), rel=1e-5)
        # GMM constraint: sum_y p(y|z) [ln N(z; mu, s^2) - ln N(z; mu_y, s_y^2)]
        log_q = (-0.5 * ((z[i] - mu[i]) ** 2 / logvar[i].exp() + logvar[i] + LOG_2PI)).sum()
        gmm = 0.0
        for k in range(3):
            var_k = model.prior.log_vars[k].exp()
            lp = (-0.5 * ((z[i] - model.prior.means[k]) ** 2 / var_k + var_k.log() + LOG_2PI)).sum()
            gmm = gmm + gamma[i, k] * (log_q - lp)
        assert t.gmm[i].item() == pytest.approx(gmm.item(), rel=1e-5)
        reg = sum(gamma[i, k] * math.log(gamma[i, k].item() * 3) for k in range(3))
        assert t.reg[i].item() == pytest.approx(float(reg), rel=1e-5)
    mi = discrete_mutual_information(joint_assignments(gamma, lg_aug.exp()))
    assert t.cmi.mean().item() == pytest.approx(mi.item(), rel=1e-5)
    combined = t.gmi + 0.5 * t.lmi + 1.0 * t.cmi - 0.2 * t.gmm - 0.3 * t.reg
    torch.testing.assert_close(model.combine(t), combined)


def test_batch_terms_shapes_and_entropy_for_the_regulariser():
    model = tiny()
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(2))
    terms = model.batch_terms(x, 3, torch.Generator().manual_seed(0), neighbor_terms=True)
    assert terms.own.shape == (5,) and terms.recon is None
    assert terms.own[3:].abs().sum() == 0  # only targets carry the objective
    torch.testing.assert_close(terms.latent_term, -(terms.gamma * terms.gamma.log()).sum(-1))
    one = model.batch_terms(x[:1], 1, torch.Generator().manual_seed(0))  # a last batch of one
    assert one.own.shape == (1,) and torch.isfinite(one.own).all() and one.own.requires_grad
    with pytest.raises(GraphclustError, match=">= 0"):
        tiny(VCAMIWeights(cmi=-1.0))


# --------------------------------------------------------------------------- augmentations
def test_vector_augment_mask_and_row_scaled_noise():
    x = torch.arange(1, 9, dtype=torch.float32).reshape(2, 4)
    assert torch.equal(VectorAugment(0.0, 0.0)(x), x)
    masked = VectorAugment(mask=0.5, noise=0.0)(x[:1].repeat(1000, 1), torch.Generator().manual_seed(0))
    assert set(torch.unique(masked[:, 0]).tolist()) == {0.0, 1.0}
    assert (masked == 0).float().mean().item() == pytest.approx(0.5, abs=0.03)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    a = VectorAugment(0.0, 0.1)(x, g1) - x
    b = VectorAugment(0.0, 0.1)(10 * x, g2) - 10 * x
    torch.testing.assert_close(b, 10 * a)  # noise scales with the row
    rms = x.pow(2).mean(-1, keepdim=True).sqrt()
    eps = torch.randn(x.shape, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, 0.1 * rms * eps)


def test_image_augment_identity_shift_and_rotation():
    img = torch.arange(25, dtype=torch.float32).reshape(1, 25)
    aug = ImageAugment((5, 5), max_shift=0, max_rotation=0)
    torch.testing.assert_close(aug(img, torch.Generator().manual_seed(0)), img)
    identity = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])
    # output pixel (r, c) samples input (r, c + 1): a shift by one pixel, zeros coming in
    shift = torch.tensor([[[1.0, 0.0, 2.0 / 5], [0.0, 1.0, 0.0]]])
    out = aug.warp(img, shift).reshape(5, 5)
    expected = torch.zeros(5, 5)
    expected[:, :4] = img.reshape(5, 5)[:, 1:]
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(aug.warp(img, identity), img)
    # a quarter turn of a square image is a 90 degree rotation of the pixel grid
    quarter = torch.tensor([[[0.0, -1.0, 0.0], [1.0, 0.0, 0.0]]])
    rotated = aug.warp(img, quarter).reshape(5, 5)
    assert any(torch.allclose(rotated, torch.rot90(img.reshape(5, 5), k, (0, 1)), atol=1e-5)
               for k in (1, 3))
    theta = ImageAugment((5, 5), max_shift=1, max_rotation=10).transforms(
        1000, torch.Generator().manual_seed(0))
    angles = torch.atan2(theta[:, 1, 0], theta[:, 0, 0]).abs().max()
    assert angles.item() <= math.radians(10) + 1e-6
    assert theta[:, :, 2].abs().max().item() <= 2 / 5 + 1e-6


def test_augmenter_selection_and_errors():
    assert isinstance(default_augmenter(None), VectorAugment)
    assert isinstance(default_augmenter((28, 28)), ImageAugment)
    assert ImageAugment((3, 4, 4)).chw == (3, 4, 4)
    with pytest.raises(GraphclustError, match="pixels"):
        ImageAugment((5, 5)).check(24)
    with pytest.raises(GraphclustError, match="image_shape"):
        ImageAugment((5,))
    with pytest.raises(GraphclustError, match="mask"):
        VectorAugment(mask=1.0)
    rgb = torch.rand(2, 3 * 4 * 4, generator=torch.Generator().manual_seed(0))
    out = ImageAugment((3, 4, 4), max_shift=1, max_rotation=5)(rgb, torch.Generator().manual_seed(1))
    assert out.shape == rgb.shape and np.isfinite(out.numpy()).all()

"""The Gaussian likelihood with a decoder-predicted, floored standard deviation (slides' GMVAE)."""

import math

import pytest
import torch

from graphclust.nn.likelihood import LearnedStdGaussianLikelihood, get_likelihood
from graphclust.utils import GraphclustError


def test_log_prob_by_hand():
    lik = LearnedStdGaussianLikelihood(eps=0.1)
    x = torch.tensor([[0.5, -1.0]])
    out = torch.tensor([[0.0, -0.5, 0.3, -2.0]])  # means (0, -0.5), raw stds (0.3, -2)
    hand = 0.0
    for d, (m, r) in enumerate([(0.0, 0.3), (-0.5, -2.0)]):
        s = math.log1p(math.exp(r)) + 0.1
        hand += -0.5 * ((x[0, d].item() - m) / s) ** 2 - math.log(s) - 0.5 * math.log(2 * math.pi)
    assert lik.log_prob(x, out).item() == pytest.approx(hand, rel=1e-6)
    torch.testing.assert_close(lik.mean(out), torch.tensor([[0.0, -0.5]]))
    torch.testing.assert_close(lik.std(out), torch.nn.functional.softplus(out[:, 2:]) + 0.1)
    assert lik.params_per_feature == 2


def test_smaller_floor_rewards_a_good_fit():
    x = torch.zeros(1, 3)
    out = torch.cat([torch.zeros(1, 3), torch.full((1, 3), -20.0)], 1)  # exact mean, tiny raw std
    assert LearnedStdGaussianLikelihood(0.01).log_prob(x, out) > LearnedStdGaussianLikelihood(
        1.0).log_prob(x, out)


def test_bad_input():
    with pytest.raises(GraphclustError, match="2 decoder outputs"):
        LearnedStdGaussianLikelihood().log_prob(torch.zeros(2, 3), torch.zeros(2, 3))
    with pytest.raises(GraphclustError, match="eps"):
        LearnedStdGaussianLikelihood(eps=0.0)
    assert type(get_likelihood("gaussian")).__name__ == "GaussianLikelihood"  # unchanged

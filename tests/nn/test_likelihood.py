import math

import numpy as np
import pytest
import torch

from graphclust.nn.likelihood import (
    BernoulliLikelihood,
    GaussianLikelihood,
    MultinomialLikelihood,
    get_likelihood,
    infer_likelihood,
)
from graphclust.utils import GraphclustError


def test_bernoulli_is_negative_bce_by_hand():
    x = torch.tensor([[0.0, 1.0, 0.25]])
    logits = torch.tensor([[0.0, 2.0, -1.0]])
    p = torch.sigmoid(logits)
    by_hand = (x * p.log() + (1 - x) * (1 - p).log()).sum(-1)
    torch.testing.assert_close(BernoulliLikelihood().log_prob(x, logits), by_hand)
    # x = 0, logit 0: ln 1/2 per pixel
    assert BernoulliLikelihood().log_prob(torch.zeros(1, 3), torch.zeros(1, 3)).item() == pytest.approx(
        3 * math.log(0.5)
    )


def test_gaussian_keeps_its_normaliser():
    x = torch.tensor([[1.0, -2.0]])
    m = torch.tensor([[0.0, 0.0]])
    lik = GaussianLikelihood(scale=2.0)
    ref = torch.distributions.Normal(m, 2.0).log_prob(x).sum(-1)
    torch.testing.assert_close(lik.log_prob(x, m), ref)


def test_auto_choice_and_checks():
    assert infer_likelihood(np.array([[0.0, 1.0]])) == "bernoulli"
    assert infer_likelihood(np.array([[0.0, 1.5]])) == "gaussian"
    assert get_likelihood("auto", np.array([[0.2, 0.3]], np.float32)).name == "bernoulli"
    with pytest.raises(GraphclustError, match=r"\[0, 1\]"):
        get_likelihood("bernoulli", np.array([[-1.0, 3.0]], np.float32))
    with pytest.raises(GraphclustError, match="unknown likelihood"):
        get_likelihood("poisson", np.zeros((2, 2), np.float32))


def test_multinomial_equals_torch_distribution_on_integer_counts():
    counts = torch.tensor([[3.0, 0.0, 1.0, 2.0], [0.0, 5.0, 0.0, 0.0]])
    logits = torch.tensor([[0.5, -1.0, 2.0, 0.0], [1.0, 1.0, -3.0, 0.2]])
    ref = torch.stack([
        torch.distributions.Multinomial(int(c.sum()), logits=lg).log_prob(c)
        for c, lg in zip(counts, logits)
    ])
    torch.testing.assert_close(MultinomialLikelihood().log_prob(counts, logits), ref)
    # the scale turns weights into counts: x / 2 with scale 2 is the same document
    torch.testing.assert_close(MultinomialLikelihood(scale=2.0).log_prob(counts / 2, logits), ref)


def test_multinomial_by_hand_and_mean():
    # one draw of word 0 out of two equally likely words: ln 1/2
    lik = MultinomialLikelihood()
    x, out = torch.tensor([[1.0, 0.0]]), torch.zeros(1, 2)
    assert lik.log_prob(x, out).item() == pytest.approx(math.log(0.5))
    # the logits' common offset does not matter; the mean is the word distribution
    torch.testing.assert_close(lik.log_prob(x, out + 7.0), lik.log_prob(x, out))
    torch.testing.assert_close(lik.mean(torch.tensor([[0.0, math.log(3.0)]])),
                               torch.tensor([[0.25, 0.75]]))
    # an empty row has probability 1
    assert lik.log_prob(torch.zeros(1, 2), torch.randn(1, 2)).item() == pytest.approx(0.0)


def test_multinomial_checks():
    assert get_likelihood("multinomial", np.array([[0.0, 2.5]], np.float32)).name == "multinomial"
    # never picked by auto, even for non-negative data
    assert get_likelihood("auto", np.array([[0.0, 2.5]], np.float32)).name == "gaussian"
    with pytest.raises(GraphclustError, match=">= 0"):
        get_likelihood("multinomial", np.array([[-0.5, 1.0]], np.float32))
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(GraphclustError, match="scale"):
            MultinomialLikelihood(scale=bad)

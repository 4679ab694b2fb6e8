import math

import numpy as np
import pytest
import torch

from graphclust.nn.likelihood import (
    BernoulliLikelihood,
    GaussianLikelihood,
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

"""VIMCO bound, leave-one-out baselines and gradient surrogate, recomputed by hand."""

import itertools
import math

import pytest
import torch

from graphclust.nn.vimco import leave_one_out_bounds, log_mean_exp, vimco_terms
from graphclust.utils import GraphclustError


def test_bound_is_log_mean_of_weights_by_hand():
    log_w = torch.tensor([[0.0, math.log(3.0)], [-1.0, -2.0]])
    bound = log_mean_exp(log_w)
    assert bound[0].item() == pytest.approx(math.log((1 + 3) / 2))
    assert bound[1].item() == pytest.approx(math.log((math.exp(-1) + math.exp(-2)) / 2))
    # three samples
    lw3 = torch.tensor([[1.0, 2.0, 4.0]])
    assert log_mean_exp(lw3).item() == pytest.approx(
        math.log((math.e + math.e**2 + math.e**4) / 3))


def test_leave_one_out_uses_the_geometric_mean_of_the_others():
    a, b, c = 1.0, 2.0, 4.0
    loo = leave_one_out_bounds(torch.tensor([[a, b, c]]))[0]

    def L(x, y, z):
        return math.log((math.exp(x) + math.exp(y) + math.exp(z)) / 3)

    assert loo[0].item() == pytest.approx(L((b + c) / 2, b, c))
    assert loo[1].item() == pytest.approx(L(a, (a + c) / 2, c))
    assert loo[2].item() == pytest.approx(L(a, b, (a + b) / 2))
    # two samples: the other one stands in for the one left out
    loo2 = leave_one_out_bounds(torch.tensor([[a, b]]))[0]
    assert loo2.tolist() == pytest.approx([b, a])


def test_surrogate_value_and_gradients():
    log_w = torch.tensor([[0.5, -1.0, 2.0]], requires_grad=True)
    log_q = torch.tensor([[-0.2, -1.5, -0.7]], requires_grad=True)
    t = vimco_terms(log_w, log_q)
    torch.testing.assert_close(t.surrogate, t.bound)
    t.surrogate.sum().backward()
    # d/d ln w_m = normalised weight; d/d ln q(y_m) = advantage L - L_{-m}
    torch.testing.assert_close(log_w.grad, torch.softmax(log_w.detach(), -1))
    expected_adv = t.bound.detach() - leave_one_out_bounds(log_w.detach())
    torch.testing.assert_close(log_q.grad, expected_adv)
    torch.testing.assert_close(t.advantage, expected_adv)


def test_estimator_is_unbiased_for_a_two_sample_discrete_posterior():
    """E_q[grad surrogate] == grad E_q[L^2], enumerating all (y_1, y_2) of a 2-class q(y)."""
    theta = torch.tensor([0.3, -0.4], requires_grad=True)
    log_p = torch.tensor([-1.0, -2.5])  # ln p(x, y) of the two classes

    def log_q():
        return torch.log_softmax(theta, 0)

    # exact objective E_{y1, y2 ~ q}[ln (w(y1) + w(y2)) / 2],  w(y) = p(x, y) / q(y)
    exact = 0.0
    for y1, y2 in itertools.product(range(2), repeat=2):
        lq = log_q()
        lw = torch.stack([log_p[y1] - lq[y1], log_p[y2] - lq[y2]])
        exact = exact + lq[y1].exp() * lq[y2].exp() * log_mean_exp(lw.unsqueeze(0))[0]
    (grad_exact,) = torch.autograd.grad(exact, theta)

    expected = torch.zeros(2)
    for y1, y2 in itertools.product(range(2), repeat=2):
        lq = log_q()
        lw = torch.stack([log_p[y1] - lq[y1], log_p[y2] - lq[y2]]).unsqueeze(0)
        sur = vimco_terms(lw, torch.stack([lq[y1], lq[y2]]).unsqueeze(0)).surrogate[0]
        (g,) = torch.autograd.grad(sur, theta)
        prob = (lq[y1] + lq[y2]).exp().detach()
        expected += prob * g
    torch.testing.assert_close(expected, grad_exact, rtol=1e-5, atol=1e-6)


def test_bad_input():
    with pytest.raises(GraphclustError, match="at least 2 samples"):
        vimco_terms(torch.zeros(3, 1), torch.zeros(3, 1))
    with pytest.raises(GraphclustError, match=r"\(n, M\)"):
        vimco_terms(torch.zeros(3, 2), torch.zeros(3, 3))

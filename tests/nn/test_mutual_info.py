"""VCAMI's mutual-information terms on tiny joint distributions, by hand."""

import math

import pytest
import torch

from graphclust.nn.mutual_info import (
    PairDiscriminator,
    discrete_mutual_information,
    joint_assignments,
    jsd_mi_terms,
    mutual_information_per_node,
)
from graphclust.utils import GraphclustError


def test_mutual_information_of_a_2x2_joint_by_hand():
    P = torch.tensor([[0.4, 0.1], [0.1, 0.4]])
    by_hand = 2 * 0.4 * math.log(0.4 / 0.25) + 2 * 0.1 * math.log(0.1 / 0.25)
    assert discrete_mutual_information(P).item() == pytest.approx(by_hand, rel=1e-6)
    # independent -> 0; a permutation of K balanced classes -> ln K
    assert discrete_mutual_information(torch.full((3, 3), 1 / 9)).item() == pytest.approx(0, abs=1e-6)
    assert discrete_mutual_information(torch.eye(3) / 3).item() == pytest.approx(math.log(3), rel=1e-5)
    # an asymmetric joint: marginals (0.3, 0.7) and (0.5, 0.5)
    Q = torch.tensor([[0.2, 0.1], [0.3, 0.4]])
    hand = sum(Q[k, l].item() * math.log(Q[k, l].item() / (Q[k].sum().item() * Q[:, l].sum().item()))
               for k in range(2) for l in range(2))
    assert discrete_mutual_information(Q).item() == pytest.approx(hand, rel=1e-6)


def test_joint_of_two_views_by_hand():
    p = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    q = torch.tensor([[0.8, 0.2], [0.0, 1.0]])
    # mean of outer products: ([[.8, .2], [0, 0]] + [[0, .5], [0, .5]]) / 2
    raw = torch.tensor([[0.4, 0.35], [0.0, 0.25]])
    torch.testing.assert_close(joint_assignments(p, q, symmetric=False), raw)
    torch.testing.assert_close(joint_assignments(p, q), (raw + raw.T) / 2)
    assert joint_assignments(p, q).sum().item() == pytest.approx(1.0)


def test_per_node_terms_average_to_the_mi_with_the_same_gradient():
    g = torch.Generator().manual_seed(0)
    logits_p = torch.randn(6, 3, generator=g, requires_grad=True)
    logits_q = torch.randn(6, 3, generator=g, requires_grad=True)

    def views():
        return logits_p.softmax(-1), logits_q.softmax(-1)

    mi = discrete_mutual_information(joint_assignments(*views()))
    per_node = mutual_information_per_node(*views())
    assert per_node.shape == (6,)
    torch.testing.assert_close(per_node.mean(), mi)
    grads_mi = torch.autograd.grad(mi, (logits_p, logits_q))
    grads_pn = torch.autograd.grad(mutual_information_per_node(*views()).mean(), (logits_p, logits_q))
    for a, b in zip(grads_mi, grads_pn):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_jsd_terms_by_hand():
    pos, neg = torch.tensor([2.0, -1.0]), torch.tensor([0.5, 3.0])

    def sigmoid(t):
        return 1 / (1 + math.exp(-t))

    hand = [math.log(sigmoid(2.0)) + math.log(1 - sigmoid(0.5)),
            math.log(sigmoid(-1.0)) + math.log(1 - sigmoid(3.0))]
    assert jsd_mi_terms(pos, neg).tolist() == pytest.approx(hand, rel=1e-6)


def test_pair_discriminator_scores_rows():
    T = PairDiscriminator(4, 2, (5,), torch.Generator().manual_seed(0))
    a, b = torch.randn(3, 4), torch.randn(3, 2)
    s = T(a, b)
    assert s.shape == (3,)
    torch.testing.assert_close(s[1:2], T(a[1:2], b[1:2]))


def test_mismatched_views():
    with pytest.raises(GraphclustError, match="two views"):
        joint_assignments(torch.ones(3, 2) / 2, torch.ones(4, 2) / 2)

"""ContrastiveLoss against numbers computed by hand."""

import pytest
import torch

from graphclust.utils import GraphclustError
from siamese import ContrastiveLoss, euclidean_distance


def test_hand_computed_pairs():
    # pair 0: (0,0)-(3,4), d = 5, dissimilar, margin 6 -> (6-5)^2 = 1
    # pair 1: same points, similar -> 5^2 = 25
    # pair 2: (1,1)-(1,1), d = 0, dissimilar -> (6-0)^2 = 36
    left = torch.tensor([[0.0, 0.0], [0.0, 0.0], [1.0, 1.0]])
    right = torch.tensor([[3.0, 4.0], [3.0, 4.0], [1.0, 1.0]])
    target = torch.tensor([0.0, 1.0, 0.0])
    loss = ContrastiveLoss(margin=6.0)(left, right, target)
    assert loss.item() == pytest.approx((1 + 25 + 36) / 3)


def test_dissimilar_beyond_margin_costs_nothing():
    left, right = torch.tensor([[0.0, 0.0]]), torch.tensor([[3.0, 4.0]])
    assert ContrastiveLoss(margin=3.0)(left, right, torch.tensor([0.0])).item() == 0.0


def test_injected_distance():
    # L1 distance of (0,0)-(3,4) is 7; similar -> 49
    l1 = lambda a, b: (a - b).abs().sum(-1)  # noqa: E731
    loss = ContrastiveLoss(margin=3.0, distance=l1)(
        torch.tensor([[0.0, 0.0]]), torch.tensor([[3.0, 4.0]]), torch.tensor([1.0])
    )
    assert loss.item() == pytest.approx(49.0)


def test_matches_plain_torch_and_gradient_is_finite_at_zero_distance():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(8, 3, generator=g, requires_grad=True)
    b = torch.randn(8, 3, generator=g)
    b[0] = a[0].detach()  # identical pair: d = 0
    t = (torch.arange(8) % 2).float()
    loss = ContrastiveLoss(margin=2.0)(a, b, t)
    d = ((a - b) ** 2).sum(1).sqrt()
    ref = (t * d**2 + (1 - t) * torch.clamp(2.0 - d, min=0) ** 2).mean()
    assert loss.item() == pytest.approx(ref.item(), rel=1e-6)
    loss.backward()
    assert torch.isfinite(a.grad).all()


def test_euclidean_distance_rowwise():
    d = euclidean_distance(torch.tensor([[0.0, 0.0], [1.0, 1.0]]), torch.tensor([[3.0, 4.0], [1.0, 1.0]]))
    assert d.tolist() == [5.0, 0.0]


def test_bad_margin():
    with pytest.raises(GraphclustError, match="margin"):
        ContrastiveLoss(margin=0)

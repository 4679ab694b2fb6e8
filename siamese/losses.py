"""Contrastive loss (Hadsell, Chopra & LeCun, 2006) with an injectable distance."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from graphclust.utils import GraphclustError

__all__ = ["ContrastiveLoss", "euclidean_distance"]


def euclidean_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise Euclidean distance ``||a_i - b_i||``, shape ``(batch,)``.

    The gradient at ``a_i == b_i`` is 0 (not NaN).
    """
    return torch.linalg.vector_norm(a - b, ord=2, dim=-1)


class ContrastiveLoss(nn.Module):
    """``mean( t * d^2 + (1 - t) * max(0, margin - d)^2 )`` over pairs.

    Similar pairs (``t = 1``) are pulled together; dissimilar pairs (``t = 0``)
    are pushed apart until they are at least ``margin`` away.

    Parameters
    ----------
    margin : float, default 3.0
        Distance beyond which dissimilar pairs cost nothing (DGG uses 3).
    distance : callable, optional
        ``distance(left, right) -> (batch,)`` distances; default
        :func:`euclidean_distance`.

    Shapes
    ------
    ``left``, ``right``: ``(batch, dim)``; ``target``: ``(batch,)`` with values in
    ``[0, 1]``; output: a scalar.
    """

    def __init__(
        self,
        margin: float = 3.0,
        distance: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        super().__init__()
        margin = float(margin)
        if not margin > 0:
            raise GraphclustError(f"margin must be > 0, got {margin}")
        self.margin = margin
        self.distance = euclidean_distance if distance is None else distance

    def forward(self, left: torch.Tensor, right: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        d = self.distance(left, right)
        target = target.to(d.dtype)
        similar = target * d.pow(2)
        dissimilar = (1.0 - target) * torch.clamp(self.margin - d, min=0.0).pow(2)
        return (similar + dissimilar).mean()

    def extra_repr(self) -> str:
        return f"margin={self.margin:g}"

"""Fully connected encoder / decoder of the Gaussian-mixture VAEs (D-500-500-2000-10 and mirror).

Weights are initialised with a caller's :class:`torch.Generator` (Glorot-uniform weights,
zero biases, as the Keras code of DEC/VaDE/DGG), never from the global RNG: layers are
created with :func:`torch.nn.utils.skip_init` and then filled.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn

from graphclust.utils import GraphclustError

__all__ = ["Decoder", "GaussianEncoder", "GaussianPosterior", "check_hidden", "init_linear", "mlp"]


def check_hidden(hidden: Sequence[int], name: str = "hidden") -> tuple[int, ...]:
    """Validate a sequence of layer widths (``()`` allowed: a linear map)."""
    if isinstance(hidden, (int, str, bytes)) or not isinstance(hidden, Sequence):
        raise GraphclustError(
            f"{name} must be a sequence of layer widths such as (500, 500, 2000), got {hidden!r}"
        )
    out = []
    for h in hidden:
        try:
            if isinstance(h, bool):
                raise TypeError
            h = operator.index(h)
        except TypeError:
            raise GraphclustError(f"{name} widths must be positive integers, got {h!r}") from None
        if h < 1:
            raise GraphclustError(f"{name} widths must be positive integers, got {h}")
        out.append(h)
    return tuple(out)


def init_linear(n_in: int, n_out: int, generator: torch.Generator | None) -> nn.Linear:
    layer = nn.utils.skip_init(nn.Linear, n_in, n_out)
    nn.init.xavier_uniform_(layer.weight, generator=generator)
    nn.init.zeros_(layer.bias)
    return layer


def mlp(dims: Sequence[int], generator: torch.Generator | None = None) -> nn.Sequential:
    """``Linear -> ReLU -> ... -> Linear`` through ``dims`` (no activation after the last layer).

    Parameters
    ----------
    dims : sequence of int
        ``(in_dim, hidden..., out_dim)``, at least two entries.
    generator : torch.Generator, optional
        Source of the initial weights.
    """
    if len(dims) < 2:
        raise GraphclustError(f"an MLP needs at least input and output sizes, got {tuple(dims)}")
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(init_linear(a, b, generator))
        if i < len(dims) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class GaussianPosterior(NamedTuple):
    """``q(z | x) = N(mu, diag exp(logvar))``; both of shape (n, latent_dim)."""

    mu: torch.Tensor
    logvar: torch.Tensor


class GaussianEncoder(nn.Module):
    """``x -> (mu, log sigma^2)``: a ReLU trunk and two linear heads.

    Parameters
    ----------
    in_dim : int
    hidden : sequence of int
        Trunk widths, e.g. ``(500, 500, 2000)``; ``()`` makes both heads linear in ``x``.
    latent_dim : int
    generator : torch.Generator, optional
    """

    def __init__(
        self,
        in_dim: int,
        hidden: Sequence[int],
        latent_dim: int,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        hidden = check_hidden(hidden)
        self.in_dim, self.latent_dim, self.hidden = int(in_dim), int(latent_dim), hidden
        if hidden:
            self.trunk = nn.Sequential(mlp((in_dim, *hidden), generator), nn.ReLU())
        else:
            self.trunk = nn.Identity()
        width = hidden[-1] if hidden else in_dim
        self.mu = init_linear(width, latent_dim, generator)
        self.logvar = init_linear(width, latent_dim, generator)

    def forward(self, x: torch.Tensor) -> GaussianPosterior:
        h = self.trunk(x)
        return GaussianPosterior(self.mu(h), self.logvar(h))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Latent means only (skips the variance head)."""
        return self.mu(self.trunk(x))

    @torch.no_grad()
    def reset_logvar(self, value: float) -> None:
        """Make ``log sigma^2`` the constant ``value`` (zero weights): used after AE pretraining,
        where the variance head was not trained."""
        self.logvar.weight.zero_()
        self.logvar.bias.fill_(float(value))


class Decoder(nn.Module):
    """``z -> decoder output`` (logits for Bernoulli, means for Gaussian data).

    Parameters
    ----------
    latent_dim : int
    hidden : sequence of int
        Widths from the latent side, e.g. ``(2000, 500, 500)`` (the encoder's reversed).
    out_dim : int
    generator : torch.Generator, optional
    """

    def __init__(
        self,
        latent_dim: int,
        hidden: Sequence[int],
        out_dim: int,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        hidden = check_hidden(hidden)
        self.net = mlp((latent_dim, *hidden, out_dim), generator)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)

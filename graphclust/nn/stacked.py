"""``k`` small networks evaluated at once: stacked weights and batched matmuls (k-DVAE, k-DAE).

A :class:`StackedLinear` holds the weights of ``n_stack`` linear layers as one tensor of
shape ``(n_stack, in_features, out_features)``. Its input is either one matrix shared by
every network, shape ``(n, in_features)`` (the first layer of ``k`` encoders that all read
``x``: one GEMM against the concatenated weights), or one matrix per network, shape
``(n_stack, n, in_features)`` (deeper layers: one ``torch.baddbmm``). The output is always
``(n_stack, n, out_features)``. No Python loop over the networks runs in ``forward``.

Weights are Glorot-uniform and biases zero, like :mod:`graphclust.nn.mlp`, drawn from a
caller's :class:`torch.Generator` network by network (network ``s`` gets the same initial
weights as an ``nn.Linear`` initialised by :func:`~graphclust.nn.mlp.init_linear` after the
``s`` networks before it).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from graphclust.nn.mlp import GaussianPosterior, check_hidden
from graphclust.utils import GraphclustError

__all__ = ["StackedDecoder", "StackedGaussianEncoder", "StackedLinear", "StackedMLP"]


class StackedLinear(nn.Module):
    """``n_stack`` independent linear layers ``y_s = x_s W_s + b_s``.

    Parameters
    ----------
    n_stack : int
        Number of networks ``k``.
    in_features, out_features : int
    generator : torch.Generator, optional
        Source of the initial weights.

    Attributes
    ----------
    weight : Parameter of shape (n_stack, in_features, out_features)
        ``weight[s]`` is the transpose of an ``nn.Linear`` weight.
    bias : Parameter of shape (n_stack, 1, out_features)
    """

    def __init__(
        self, n_stack: int, in_features: int, out_features: int,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if int(n_stack) < 1:
            raise GraphclustError(f"n_stack must be >= 1, got {n_stack}")
        self.n_stack, self.in_features, self.out_features = int(n_stack), int(in_features), int(
            out_features)
        weight = torch.empty(self.n_stack, self.out_features, self.in_features)
        for s in range(self.n_stack):  # once, at construction: the same draws as nn.Linear
            nn.init.xavier_uniform_(weight[s], generator=generator)
        self.weight = nn.Parameter(weight.transpose(1, 2).contiguous())
        self.bias = nn.Parameter(torch.zeros(self.n_stack, 1, self.out_features))

    def extra_repr(self) -> str:
        return f"n_stack={self.n_stack}, in_features={self.in_features}, out_features={self.out_features}"

    def forward(self, x: Tensor) -> Tensor:
        """Apply every network.

        Parameters
        ----------
        x : Tensor of shape (n, in_features) or (n_stack, n, in_features)
            One input shared by all networks, or one input per network.

        Returns
        -------
        Tensor of shape (n_stack, n, out_features)
        """
        K, d_in, d_out = self.n_stack, self.in_features, self.out_features
        if x.dim() == 2:
            # one GEMM against the networks' weights side by side: (n, d_in) @ (d_in, K * d_out)
            w = self.weight.permute(1, 0, 2).reshape(d_in, K * d_out)
            out = (x @ w).view(x.shape[0], K, d_out).transpose(0, 1)
            return out + self.bias
        if x.dim() != 3 or x.shape[0] != K:
            raise GraphclustError(
                f"StackedLinear expects (n, {d_in}) or ({K}, n, {d_in}) inputs, got {tuple(x.shape)}"
            )
        return torch.baddbmm(self.bias, x, self.weight)


class StackedMLP(nn.Module):
    """``Linear -> ReLU -> ... -> Linear`` for ``n_stack`` networks at once.

    Parameters
    ----------
    n_stack : int
    dims : sequence of int
        ``(in_dim, hidden..., out_dim)``, at least two entries.
    generator : torch.Generator, optional
    """

    def __init__(self, n_stack: int, dims: Sequence[int], generator: torch.Generator | None = None):
        super().__init__()
        if len(dims) < 2:
            raise GraphclustError(f"an MLP needs at least input and output sizes, got {tuple(dims)}")
        self.layers = nn.ModuleList(
            StackedLinear(n_stack, a, b, generator) for a, b in zip(dims[:-1], dims[1:])
        )

    def forward(self, x: Tensor) -> Tensor:
        """``x`` of shape (n, in_dim) or (n_stack, n, in_dim) -> (n_stack, n, out_dim)."""
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < last:
                x = torch.relu(x)
        return x


class StackedGaussianEncoder(nn.Module):
    """``n_stack`` encoders ``x -> (mu_s, log sigma_s^2)``, all reading the same ``x``.

    Parameters
    ----------
    n_stack : int
    in_dim : int
    hidden : sequence of int
        Trunk widths of each encoder (k-DVAE: ``(500, 100)``).
    latent_dim : int
    generator : torch.Generator, optional
    """

    def __init__(
        self, n_stack: int, in_dim: int, hidden: Sequence[int], latent_dim: int,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        hidden = check_hidden(hidden)
        self.n_stack, self.in_dim, self.latent_dim, self.hidden = int(n_stack), int(in_dim), int(
            latent_dim), hidden
        self.trunk = StackedMLP(n_stack, (in_dim, *hidden), generator) if hidden else None
        width = hidden[-1] if hidden else in_dim
        self.mu = StackedLinear(n_stack, width, latent_dim, generator)
        self.logvar = StackedLinear(n_stack, width, latent_dim, generator)

    def _features(self, x: Tensor) -> Tensor:
        return x if self.trunk is None else torch.relu(self.trunk(x))

    def forward(self, x: Tensor) -> GaussianPosterior:
        """``x`` of shape (n, in_dim) -> ``mu``, ``logvar`` of shape (n_stack, n, latent_dim)."""
        h = self._features(x)
        return GaussianPosterior(self.mu(h), self.logvar(h))

    def embed(self, x: Tensor) -> Tensor:
        """Latent means only, shape (n_stack, n, latent_dim)."""
        return self.mu(self._features(x))

    @torch.no_grad()
    def reset_logvar(self, value: float) -> None:
        """Make every ``log sigma^2`` the constant ``value`` (after autoencoder pretraining)."""
        self.logvar.weight.zero_()
        self.logvar.bias.fill_(float(value))


class StackedDecoder(nn.Module):
    """``n_stack`` decoders ``z_s -> output_s``.

    Parameters
    ----------
    n_stack : int
    latent_dim : int
    hidden : sequence of int
        Widths from the latent side (k-DVAE: ``(100, 500)``).
    out_dim : int
    generator : torch.Generator, optional
    """

    def __init__(
        self, n_stack: int, latent_dim: int, hidden: Sequence[int], out_dim: int,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        hidden = check_hidden(hidden)
        self.net = StackedMLP(n_stack, (latent_dim, *hidden, out_dim), generator)

    def forward(self, z: Tensor) -> Tensor:
        """``z`` of shape (n_stack, n, latent_dim) -> (n_stack, n, out_dim)."""
        return self.net(z)

"""Torch modules for the Siamese embedding stage.

One network, :class:`MLPEmbedding`, maps an input row to an embedding; the two
"arms" of the Siamese pair are the same module applied twice (shared weights).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence

import torch
from torch import nn

from graphclust.utils import GraphclustError

__all__ = ["ACTIVATIONS", "MLPEmbedding"]

#: Activation names accepted by :class:`MLPEmbedding` (a callable returning a module also works).
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "selu": nn.SELU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
}


def _check_dims(in_dim: int, hidden: Sequence[int], out_dim: int) -> tuple[int, tuple[int, ...], int]:
    def _pos_int(v, what):
        try:
            if isinstance(v, bool):
                raise TypeError
            v = operator.index(v)
        except TypeError:
            raise GraphclustError(f"{what} must be a positive integer, got {v!r}") from None
        if v < 1:
            raise GraphclustError(f"{what} must be a positive integer, got {v}")
        return v

    if isinstance(hidden, (int, str)) or not isinstance(hidden, Sequence):
        raise GraphclustError(
            f"hidden must be a sequence of layer widths such as (500, 500, 2000) or () for a "
            f"linear map, got {hidden!r}"
        )
    return (
        _pos_int(in_dim, "in_dim"),
        tuple(_pos_int(h, "each hidden width") for h in hidden),
        _pos_int(out_dim, "out_dim"),
    )


class MLPEmbedding(nn.Module):
    """Fully connected embedding network ``in_dim -> hidden... -> out_dim``.

    Each hidden layer is ``Linear -> [BatchNorm1d] -> activation``; the last layer
    is linear (no activation), as in DGG's D-500-500-2000-10 Siamese network.

    The module never draws from PyTorch's global random generator: layers are
    created on the ``meta`` device and their weights are then initialised with
    PyTorch's default scheme (Kaiming-uniform, ``a=sqrt(5)``; bias uniform in
    ``+-1/sqrt(fan_in)``) from ``generator``.

    Parameters
    ----------
    in_dim : int
        Number of input features ``n_features``.
    hidden : sequence of int, default (500, 500, 2000)
        Widths of the hidden layers; ``()`` gives a single linear map.
    out_dim : int, default 10
        Embedding dimension.
    activation : str or callable, default "relu"
        A name from :data:`ACTIVATIONS` or a zero-argument callable returning an
        ``nn.Module`` (e.g. ``nn.Softplus``). Only names can be saved by
        :meth:`siamese.SiameseEmbedder.save`.
    batch_norm : bool, default False
        Insert ``BatchNorm1d`` after each hidden linear layer.
    generator : torch.Generator, optional
        CPU generator for the weight initialisation; ``None`` uses PyTorch's
        global generator (like any ``nn.Linear``).

    Shapes
    ------
    input ``(batch, in_dim)`` -> output ``(batch, out_dim)``.
    """

    def __init__(
        self,
        in_dim: int,
        hidden: Sequence[int] = (500, 500, 2000),
        out_dim: int = 10,
        activation: str | Callable[[], nn.Module] = "relu",
        batch_norm: bool = False,
        *,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        in_dim, hidden, out_dim = _check_dims(in_dim, hidden, out_dim)
        if isinstance(activation, str):
            if activation not in ACTIVATIONS:
                raise GraphclustError(
                    f"unknown activation {activation!r}; expected one of {sorted(ACTIVATIONS)} "
                    "or a callable that returns an nn.Module"
                )
            make_act = ACTIVATIONS[activation]
        elif callable(activation):
            make_act = activation
        else:
            raise GraphclustError(f"activation must be a name or a callable, got {activation!r}")

        self.in_dim, self.hidden, self.out_dim = in_dim, hidden, out_dim
        self.activation, self.batch_norm = activation, bool(batch_norm)

        layers: list[nn.Module] = []
        width = in_dim
        for h in hidden:
            layers.append(nn.Linear(width, h, device="meta"))
            if batch_norm:
                layers.append(nn.BatchNorm1d(h, device="meta"))
            act = make_act()
            if not isinstance(act, nn.Module):
                raise GraphclustError(f"activation callable returned {type(act).__name__}, not an nn.Module")
            layers.append(act)
            width = h
        layers.append(nn.Linear(width, out_dim, device="meta"))
        self.layers = nn.Sequential(*layers)
        self.to_empty(device="cpu")
        self.reset_parameters(generator)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """(Re-)initialise all weights from ``generator`` (PyTorch's default scheme)."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5), generator=generator)
                bound = 1.0 / math.sqrt(m.in_features)
                nn.init.uniform_(m.bias, -bound, bound, generator=generator)
            elif isinstance(m, nn.BatchNorm1d):
                m.reset_parameters()  # deterministic: ones, zeros, fresh running stats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embed a batch ``(batch, in_dim)`` -> ``(batch, out_dim)``."""
        return self.layers(x)

    def extra_repr(self) -> str:
        return f"in_dim={self.in_dim}, hidden={self.hidden}, out_dim={self.out_dim}"

"""Stacked networks (k encoder/decoder pairs at once) against a Python loop of plain layers."""

import pytest
import torch

from graphclust.nn.mlp import init_linear
from graphclust.nn.stacked import (
    StackedDecoder,
    StackedGaussianEncoder,
    StackedLinear,
    StackedMLP,
)
from graphclust.utils import GraphclustError


def reference_layers(K, n_in, n_out, seed):
    """K nn.Linear layers initialised one after the other from one generator."""
    g = torch.Generator().manual_seed(seed)
    return [init_linear(n_in, n_out, g) for _ in range(K)]


def test_initial_weights_match_nn_linear_drawn_in_order():
    layer = StackedLinear(3, 4, 5, torch.Generator().manual_seed(7))
    ref = reference_layers(3, 4, 5, seed=7)
    for k in range(3):
        torch.testing.assert_close(layer.weight[k], ref[k].weight.T)
        assert torch.count_nonzero(layer.bias[k]) == 0


@pytest.mark.parametrize("shared", [True, False])
def test_stacked_linear_equals_a_loop_of_linear_layers(shared):
    K, n, d_in, d_out = 3, 5, 4, 2
    layer = StackedLinear(K, d_in, d_out, torch.Generator().manual_seed(0))
    with torch.no_grad():
        layer.bias.normal_(generator=torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(2)
    x = torch.randn(n, d_in, generator=g) if shared else torch.randn(K, n, d_in, generator=g)
    out = layer(x)
    assert out.shape == (K, n, d_out)
    for k in range(K):
        xk = x if shared else x[k]
        torch.testing.assert_close(out[k], xk @ layer.weight[k] + layer.bias[k, 0])


def test_stacked_mlp_encoder_decoder_against_per_network_forward():
    K, n, D, M = 2, 6, 5, 3
    g = torch.Generator().manual_seed(0)
    enc = StackedGaussianEncoder(K, D, (7, 4), M, g)
    dec = StackedDecoder(K, M, (4, 7), D, g)
    x = torch.randn(n, D, generator=torch.Generator().manual_seed(1))
    mu, logvar = enc(x)
    recon = dec(mu)
    assert mu.shape == logvar.shape == (K, n, M) and recon.shape == (K, n, D)

    def lin(layer, k, h):
        return h @ layer.weight[k] + layer.bias[k, 0]

    for k in range(K):  # network k by hand
        h = x
        for layer in enc.trunk.layers:
            h = torch.relu(lin(layer, k, h))
        torch.testing.assert_close(mu[k], lin(enc.mu, k, h))
        torch.testing.assert_close(logvar[k], lin(enc.logvar, k, h))
        r = mu[k]
        for i, layer in enumerate(dec.net.layers):
            r = lin(layer, k, r)
            if i < len(dec.net.layers) - 1:
                r = torch.relu(r)
        torch.testing.assert_close(recon[k], r)
    torch.testing.assert_close(enc.embed(x), mu)
    enc.reset_logvar(-2.0)
    torch.testing.assert_close(enc(x).logvar, torch.full((K, n, M), -2.0))


def test_linear_encoder_without_hidden_layers():
    enc = StackedGaussianEncoder(2, 3, (), 2, torch.Generator().manual_seed(0))
    x = torch.ones(4, 3)
    torch.testing.assert_close(enc.embed(x)[1], x @ enc.mu.weight[1] + enc.mu.bias[1, 0])


def test_bad_shapes():
    layer = StackedLinear(2, 3, 4)
    with pytest.raises(GraphclustError, match="expects"):
        layer(torch.zeros(3, 5, 3))
    with pytest.raises(GraphclustError, match="n_stack"):
        StackedLinear(0, 3, 4)
    with pytest.raises(GraphclustError, match="at least"):
        StackedMLP(2, (3,))

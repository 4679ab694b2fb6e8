"""MLPEmbedding: shapes, layout and initialisation from a local generator."""

import pytest
import torch
from torch import nn

from graphclust.utils import GraphclustError
from siamese import MLPEmbedding


def test_default_is_dgg_layout_and_output_shape():
    net = MLPEmbedding(784, generator=torch.Generator().manual_seed(0))
    widths = [(m.in_features, m.out_features) for m in net.modules() if isinstance(m, nn.Linear)]
    assert widths == [(784, 500), (500, 500), (500, 2000), (2000, 10)]
    assert net(torch.zeros(3, 784)).shape == (3, 10)


def test_configurable_layers():
    net = MLPEmbedding(5, hidden=(4,), out_dim=2, activation="tanh", batch_norm=True)
    kinds = [type(m) for m in net.layers]
    assert kinds == [nn.Linear, nn.BatchNorm1d, nn.Tanh, nn.Linear]
    assert net(torch.zeros(4, 5)).shape == (4, 2)
    linear = MLPEmbedding(5, hidden=(), out_dim=3)
    assert [type(m) for m in linear.layers] == [nn.Linear]
    assert MLPEmbedding(5, hidden=[3], activation=nn.Softplus)(torch.zeros(2, 5)).shape == (2, 10)


def test_init_uses_local_generator_only():
    state = torch.random.get_rng_state()
    a = MLPEmbedding(6, hidden=(4,), generator=torch.Generator().manual_seed(1))
    b = MLPEmbedding(6, hidden=(4,), generator=torch.Generator().manual_seed(1))
    c = MLPEmbedding(6, hidden=(4,), generator=torch.Generator().manual_seed(2))
    assert torch.equal(torch.random.get_rng_state(), state)  # global RNG untouched
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    assert not torch.equal(a.layers[0].weight, c.layers[0].weight)
    # default PyTorch bound for the weights: 1/sqrt(fan_in)
    assert a.layers[0].weight.abs().max() <= 1 / 6**0.5


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(in_dim=0), "in_dim"),
        (dict(in_dim=4, hidden=500), "hidden"),
        (dict(in_dim=4, hidden=(3, 0)), "hidden width"),
        (dict(in_dim=4, out_dim=2.5), "out_dim"),
        (dict(in_dim=4, activation="swishy"), "unknown activation"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(GraphclustError, match=match):
        MLPEmbedding(**kwargs)

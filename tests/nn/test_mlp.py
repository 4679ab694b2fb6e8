import pytest
import torch

from graphclust.nn.mlp import Decoder, GaussianEncoder, mlp
from graphclust.utils import GraphclustError


def test_shapes_and_mirror():
    enc = GaussianEncoder(7, (5, 4), 2, torch.Generator().manual_seed(0))
    dec = Decoder(2, (4, 5), 7, torch.Generator().manual_seed(0))
    mu, logvar = enc(torch.rand(3, 7))
    assert mu.shape == logvar.shape == (3, 2)
    assert dec(mu).shape == (3, 7)
    torch.testing.assert_close(enc.embed(torch.ones(1, 7)), enc(torch.ones(1, 7)).mu)


def test_same_generator_same_weights_and_global_rng_untouched():
    state = torch.get_rng_state()
    a = mlp((6, 4, 3), torch.Generator().manual_seed(1))
    b = mlp((6, 4, 3), torch.Generator().manual_seed(1))
    c = mlp((6, 4, 3), torch.Generator().manual_seed(2))
    assert torch.equal(torch.get_rng_state(), state)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    assert not torch.equal(a[0].weight, c[0].weight)
    assert torch.count_nonzero(a[0].bias) == 0


def test_reset_logvar_and_bad_hidden():
    enc = GaussianEncoder(4, (), 2)
    enc.reset_logvar(-3.0)
    torch.testing.assert_close(enc(torch.rand(5, 4)).logvar, torch.full((5, 2), -3.0))
    with pytest.raises(GraphclustError, match="hidden"):
        GaussianEncoder(4, 500, 2)
    with pytest.raises(GraphclustError, match="positive"):
        GaussianEncoder(4, (0,), 2)

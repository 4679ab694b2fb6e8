"""Attention on kNN edges + tokens: hand-computed numbers, the dense reference, masking, batching."""

import math

import pytest
import torch

from graphclust.nn.attention import (
    AttentionBlock,
    GenDropout,
    KnnTokenAttention,
    SetPool,
    dense_attention,
    group_argmax,
    masked_log_softmax,
    masked_softmax,
)
from graphclust.utils import GraphclustError


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def identity_layer(dim=2):
    layer = KnnTokenAttention(dim, heads=1)
    with torch.no_grad():
        for lin in (layer.lin_q, layer.lin_k, layer.lin_v, layer.lin_o):
            lin.weight.copy_(torch.eye(dim))
        layer.lin_o.bias.zero_()
    return layer


def complete_graph(n):
    src, dst = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    off = src != dst
    return torch.stack([src[off], dst[off]])


def test_attention_by_hand():
    # T1: node 0 = [1, 0] attends to itself, node 1 = [0, 1] and node 2 = [1, 1]
    layer = identity_layer()
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    edge_index = torch.tensor([[1, 2], [0, 0]])  # j -> i
    out = layer(x, edge_index)
    # logits [1, 0, 1] / sqrt(2) = [0.7071, 0, 0.7071] -> weights [0.4011, 0.1978, 0.4011]
    w = torch.softmax(torch.tensor([1.0, 0.0, 1.0]) / math.sqrt(2), 0)
    assert torch.allclose(w, torch.tensor([0.4011, 0.1978, 0.4011]), atol=1e-4)
    assert torch.allclose(out[0], torch.tensor([0.8022, 0.5989]), atol=1e-4)
    # nodes 1 and 2 only have their self-loop: attention returns their own value
    assert torch.allclose(out[1:], x[1:])


def test_edge_bias_is_added_to_the_logits():
    layer = KnnTokenAttention(2, heads=1, edge_dim=1)
    with torch.no_grad():
        for lin in (layer.lin_q, layer.lin_k, layer.lin_v, layer.lin_o):
            lin.weight.copy_(torch.eye(2))
        layer.lin_o.bias.zero_()
        layer.lin_edge.weight.fill_(1.0)
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    edge_index = torch.tensor([[1, 2], [0, 0]])
    out = layer(x, edge_index, edge_attr=torch.tensor([[math.log(0.5)], [-30.0]]))
    w = torch.softmax(torch.tensor([1 / math.sqrt(2), math.log(0.5), 1 / math.sqrt(2) - 30]), 0)
    expected = w[0] * x[0] + w[1] * x[1] + w[2] * x[2]
    assert torch.allclose(out[0], expected, atol=1e-5)
    with pytest.raises(GraphclustError, match="edge_attr"):
        layer(x, edge_index)


@pytest.mark.parametrize("n_tokens", [0, 3])
def test_complete_graph_equals_dense_attention(n_tokens):
    # T3: J = N - 1 (plus tokens) is the dense set attention of eq. 2
    layer = KnnTokenAttention(8, heads=2, edge_dim=2)
    for p in layer.parameters():
        with torch.no_grad():
            p.copy_(torch.randn(p.shape, generator=gen(1)) * 0.5)
    n = 7
    x = torch.randn(n, 8, generator=gen(2))
    ei = complete_graph(n)
    attr = torch.randn(ei.shape[1], 2, generator=gen(3))
    tokens = torch.randn(1, n_tokens, 8, generator=gen(4))
    bias = torch.zeros(n, n, 2)
    bias[ei[1], ei[0]] = layer.lin_edge(attr).detach()
    got = layer(x, ei, attr, tokens if n_tokens else None)
    ref = dense_attention(layer, x, bias, tokens[0] if n_tokens else None)
    assert torch.allclose(got, ref, atol=1e-5)


def test_batched_graphs_do_not_leak():
    # T4: two graphs in one batch == each alone (tokens and softmax stay inside a graph)
    block = AttentionBlock(8, heads=2, edge_dim=2, hidden=16)
    x = torch.randn(9, 8, generator=gen(5))
    ei_a = torch.tensor([[1, 2, 0, 3, 2], [0, 0, 1, 2, 3]])
    ei_b = torch.tensor([[1, 0, 4, 2], [0, 1, 3, 4]])
    attr_a = torch.randn(5, 2, generator=gen(6))
    attr_b = torch.randn(4, 2, generator=gen(7))
    tok = torch.randn(2, 3, 8, generator=gen(8))
    batch = torch.tensor([0] * 4 + [1] * 5)
    both = block(x, torch.cat([ei_a, ei_b + 4], 1), torch.cat([attr_a, attr_b]), tok, batch)
    alone_a = block(x[:4], ei_a, attr_a, tok[:1])
    alone_b = block(x[4:], ei_b, attr_b, tok[1:])
    assert torch.allclose(both, torch.cat([alone_a, alone_b]), atol=1e-5)


def test_isolated_node_gets_finite_output():
    layer = KnnTokenAttention(4, heads=2)
    x = torch.randn(3, 4, generator=gen(9))
    out = layer(x, torch.zeros((2, 0), dtype=torch.long))
    assert torch.isfinite(out).all()
    # without self-loops and tokens an isolated node gets zeros from attention (bias only)
    bare = KnnTokenAttention(4, heads=2, self_loops=False)
    out = bare(x, torch.zeros((2, 0), dtype=torch.long))
    assert torch.allclose(out, bare.lin_o.bias.expand(3, -1))


def test_masked_softmax_per_graph():
    # T2: sums to 1 over unmasked entries per graph; a fully masked graph gives zeros
    s = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    index = torch.tensor([0, 0, 0, 1, 1])
    mask = torch.tensor([True, False, True, False, False])
    p = masked_softmax(s, index, 3, mask)
    assert torch.allclose(p[[0, 2]], torch.softmax(torch.tensor([1.0, 3.0]), 0))
    assert p[1] == 0 and torch.all(p[3:] == 0)
    assert not torch.isnan(p).any()
    lp = masked_log_softmax(s, index, 3, mask)
    assert torch.isinf(lp[[1, 3, 4]]).all() and torch.isfinite(lp[[0, 2]]).all()
    # gradients stay finite through masked entries
    s.requires_grad_(True)
    masked_log_softmax(s, index, 3, mask)[[0, 2]].sum().backward()
    assert torch.isfinite(s.grad).all()


def test_group_argmax_ignores_masked_and_breaks_ties_to_smallest_index():
    s = torch.tensor([9.0, 1.0, 1.0, 0.5, 7.0])
    index = torch.tensor([0, 0, 0, 1, 1])
    mask = torch.tensor([False, True, True, True, False])
    assert group_argmax(s, index, 3, mask).tolist() == [1, 3, -1]
    assert group_argmax(s, index, 2).tolist() == [0, 4]


def test_set_pool_matches_manual_attention_and_zeroes_empty_groups():
    pool = SetPool(4, heads=1, n_seeds=1, hidden=8)
    with torch.no_grad():
        pool.seeds.copy_(torch.randn(1, 4, generator=gen(10)))
    x = torch.randn(5, 4, generator=gen(11))
    index = torch.tensor([0, 0, 1, 1, 1])
    mask = torch.tensor([True, True, True, False, False])
    out = pool(x, index, 3, mask)
    assert out.shape == (3, 1, 4)
    assert torch.all(out[2] == 0)  # group 2 has no nodes
    # group 1 keeps one node: the attention output is that node's value
    q = pool.lin_q(pool.seeds)
    att = pool.lin_o(pool.lin_v(x[2:3]))
    y = pool.norm1(q + att)
    assert torch.allclose(out[1], pool.norm2(y + pool.ff(y)), atol=1e-6)
    # group 0: softmax over its two nodes
    logits = (pool.lin_k(x[:2]) @ q.T).squeeze(-1) / 2.0
    w = torch.softmax(logits, 0)
    att0 = pool.lin_o((w[:, None] * pool.lin_v(x[:2])).sum(0, keepdim=True))
    y0 = pool.norm1(q + att0)
    assert torch.allclose(out[0], pool.norm2(y0 + pool.ff(y0)), atol=1e-5)


def test_gen_dropout_is_reproducible_from_a_local_generator():
    drop = GenDropout(0.5)
    x = torch.ones(1000)
    drop.generator = gen(12)
    a = drop(x)
    drop.generator = gen(12)
    assert torch.equal(a, drop(x))
    assert set(a.unique().tolist()) == {0.0, 2.0}
    drop.eval()
    assert torch.equal(drop(x), x)
    with pytest.raises(GraphclustError):
        GenDropout(1.0)


def test_heads_must_divide_dim():
    with pytest.raises(GraphclustError, match="divisible"):
        KnnTokenAttention(6, heads=4)
    with pytest.raises(GraphclustError, match="divisible"):
        SetPool(6, heads=4)

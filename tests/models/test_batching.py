"""The vectorised batches against the NeighborDataset + SubgraphCollate reference."""

import numpy as np
import pytest
import torch

from graphclust.data.neighbors import NeighborDataset, SubgraphCollate
from graphclust.graph.graph import KNNGraph
from graphclust.models.batching import NeighborBatches
from graphclust.utils import GraphclustError


def small_graph(n=10, k=3, seed=0):
    rng = np.random.default_rng(seed)
    idx = np.stack([rng.choice(np.delete(np.arange(n), i), k, replace=False) for i in range(n)])
    w = rng.uniform(0.1, 1.0, (n, k)).astype(np.float32)
    return KNNGraph(idx, w / w.sum(1, keepdims=True), np.ones((n, k), np.float32))


def test_full_neighbour_batch_equals_dataset_and_collate():
    g = small_graph()
    X = torch.arange(40, dtype=torch.float32).reshape(10, 4)
    anchors = torch.tensor([7, 2, 5, 0])
    ds = NeighborDataset(g)
    ref = SubgraphCollate(X)([ds[int(a)] for a in anchors])
    got = NeighborBatches(X, g, batch_size=4).batch(anchors)
    assert got.n_anchors == ref.n_anchors == 4
    for a, b in zip(got[:4], ref[:4]):
        assert torch.equal(a, b)


def test_sampled_batch_has_the_reference_layout_and_frequencies():
    g = small_graph(n=6, k=3)
    X = torch.rand(6, 2)
    nb = NeighborBatches(X, g, batch_size=6, sample=2, generator=torch.Generator().manual_seed(0))
    counts = np.zeros((6, 6))
    for _ in range(3000):
        b = next(iter(nb))
        assert torch.equal(b.node_ids[: b.n_anchors].sort().values, torch.arange(6))
        assert b.edge_index.shape == (2, 12)
        torch.testing.assert_close(b.edge_weight, torch.full((12,), 0.5))  # sum_j w_ij / 2
        src = b.node_ids[b.edge_index[0]].numpy()
        dst = b.node_ids[b.edge_index[1]].numpy()
        np.add.at(counts, (dst, src), 1)
    freq = counts / counts.sum(1, keepdims=True)
    expected = np.zeros((6, 6))
    np.put_along_axis(expected, g.indices, g.weights, axis=1)
    np.testing.assert_allclose(freq, expected, atol=0.03)


def test_no_graph_gives_anchor_only_batches_covering_every_node_once():
    X = torch.rand(7, 3)
    nb = NeighborBatches(X, None, batch_size=3, generator=torch.Generator().manual_seed(1))
    batches = list(nb)
    assert len(nb) == len(batches) == 3
    ids = torch.cat([b.node_ids for b in batches])
    assert torch.equal(ids.sort().values, torch.arange(7))
    assert all(b.edge_index.shape == (2, 0) for b in batches)
    assert torch.equal(batches[0].x, X[batches[0].node_ids])


def test_same_generator_state_same_batches_and_bad_args():
    g = small_graph()
    X = torch.rand(10, 2)
    a = NeighborBatches(X, g, 4, sample=1, generator=torch.Generator().manual_seed(3))
    b = NeighborBatches(X, g, 4, sample=1, generator=torch.Generator().manual_seed(3))
    for x, y in zip(a, b):
        assert torch.equal(x.node_ids, y.node_ids) and torch.equal(x.edge_index, y.edge_index)
    with pytest.raises(GraphclustError, match="nodes"):
        NeighborBatches(torch.rand(3, 2), g, 4)
    with pytest.raises(GraphclustError, match="sample"):
        NeighborBatches(X, g, 4, sample=0)


@pytest.mark.parametrize("sample", [None, 2])
def test_shards_split_each_batch_and_draw_like_one_process(sample):
    g = small_graph(n=11, k=3)
    X = torch.rand(11, 2)
    make = lambda: NeighborBatches(X, g, batch_size=5, sample=sample,
                                   generator=torch.Generator().manual_seed(3))
    whole, ranks = make(), [make(), make()]  # each rank holds its own, equally seeded copy
    batches = list(whole)
    per_rank = [list(nb.shards(r, 2)) for r, nb in enumerate(ranks)]
    for nb in ranks:  # the generators advance as in one process
        assert torch.equal(nb.generator.get_state(), whole.generator.get_state())
    for b, p0, p1 in zip(batches, *per_rank, strict=True):
        B = b.n_anchors
        assert p0.n_global_anchors == p1.n_global_anchors == B
        assert p0.batch.n_anchors == B // 2 and p1.batch.n_anchors == B - B // 2
        anchors = torch.cat([p0.batch.node_ids[: p0.batch.n_anchors],
                             p1.batch.node_ids[: p1.batch.n_anchors]])
        assert torch.equal(anchors, b.node_ids[:B])  # contiguous shards, in order
        edges = set()
        for p in (p0, p1):
            assert p.n_global_nodes == b.node_ids.numel()
            # global_rows locate each shard node in the whole batch's node list
            assert torch.equal(b.node_ids[p.global_rows], p.batch.node_ids)
            src, dst = p.batch.node_ids[p.batch.edge_index]
            edges |= set(zip(src.tolist(), dst.tolist(), p.batch.edge_weight.tolist()))
        src, dst = b.node_ids[b.edge_index]
        assert edges == set(zip(src.tolist(), dst.tolist(), b.edge_weight.tolist()))

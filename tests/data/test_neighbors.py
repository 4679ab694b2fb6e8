import numpy as np
import pytest
import torch

from graphclust.data.neighbors import NeighborDataset, SubgraphCollate
from graphclust.graph.graph import KNNGraph
from graphclust.utils import GraphclustError


@pytest.fixture
def graph():
    idx = np.array([[1, 2], [0, 2], [1, 3], [2, 1]])
    w = np.array([[0.75, 0.25], [0.5, 0.5], [0.9, 0.1], [1.0, 0.0]], dtype=np.float32)
    return KNNGraph(idx, w, np.ones((4, 2), np.float32))


def test_items_are_indices_not_rows(graph):
    ds = NeighborDataset(graph)
    item = ds[2]
    assert item.node == 2
    assert item.neighbors.tolist() == [1, 3]
    assert torch.allclose(item.weights, torch.tensor([0.9, 0.1]))
    assert item.neighbors.dtype == torch.long
    assert len(ds) == 4
    assert NeighborDataset(graph, n_neighbors=1)[0].neighbors.tolist() == [1]


def test_collate_builds_local_subgraph(graph):
    X = torch.arange(8, dtype=torch.float32).reshape(4, 2)
    ds = NeighborDataset(graph)
    batch = SubgraphCollate(X)([ds[3], ds[0]])
    # anchors first (3, 0), then the other neighbours sorted (1, 2)
    assert batch.node_ids.tolist() == [3, 0, 1, 2]
    assert batch.n_anchors == 2
    assert torch.equal(batch.x, X[[3, 0, 1, 2]])
    src = batch.node_ids[batch.edge_index[0]].tolist()
    dst = batch.node_ids[batch.edge_index[1]].tolist()
    assert list(zip(src, dst)) == [(2, 3), (1, 3), (1, 0), (2, 0)]
    assert torch.allclose(batch.edge_weight, torch.tensor([1.0, 0.0, 0.75, 0.25]))


def test_weighted_sampling_is_unbiased(graph):
    ds = NeighborDataset(graph, sample=4, random_state=0)
    f = torch.tensor([10.0, 20.0, 30.0, 40.0])
    exact = 0.75 * f[1] + 0.25 * f[2]
    est = torch.stack([(ds[0].weights * f[ds[0].neighbors]).sum() for _ in range(2000)]).mean()
    assert est == pytest.approx(float(exact), rel=0.02)
    # zero-weight neighbour is never drawn
    assert all(set(ds[3].neighbors.tolist()) == {2} for _ in range(20))


def test_sampling_deterministic_for_seed(graph):
    a = [NeighborDataset(graph, sample=3, random_state=7)[i].neighbors for i in range(4)]
    b = [NeighborDataset(graph, sample=3, random_state=7)[i].neighbors for i in range(4)]
    assert all(torch.equal(u, v) for u, v in zip(a, b))


def test_bad_dataset_args(graph):
    with pytest.raises(GraphclustError, match="n_neighbors"):
        NeighborDataset(graph, n_neighbors=3)
    with pytest.raises(GraphclustError, match="sample"):
        NeighborDataset(graph, sample=0)
    with pytest.raises(GraphclustError, match="empty"):
        SubgraphCollate(torch.zeros(4, 2))([])

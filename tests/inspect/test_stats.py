"""The numbers behind each panel, on a 6-node graph small enough to compute on paper.

The graph (edge i -> neighbour j : weight), clusters {0, 1, 2} and {3, 4, 5}::

    0 -> 1 : 0.5   0 -> 2 : 0.5        3 -> 4 : 0.5   3 -> 5 : 0.5
    1 -> 0 : 0.6   1 -> 2 : 0.4        4 -> 3 : 0.8   4 -> 5 : 0.2
    2 -> 0 : 0.3   2 -> 3 : 0.7 (x)    5 -> 4 : 0.9   5 -> 0 : 0.1 (x)

(x) are the two edges between clusters. Edge weight from cluster 0 to 0: 2.3, 0 to 1: 0.7,
1 to 0: 0.1, 1 to 1: 2.9 (total 6.0).
"""

import numpy as np
import pytest
import scipy.sparse as sp

from graphclust.graph.graph import KNNGraph
from graphclust.inspect import stats as S
from graphclust.inspect.inputs import graph_matrix
from graphclust.utils import GraphclustError

INDICES = [[1, 2], [0, 2], [0, 3], [4, 5], [3, 5], [4, 0]]
WEIGHTS = [[0.5, 0.5], [0.6, 0.4], [0.3, 0.7], [0.5, 0.5], [0.8, 0.2], [0.9, 0.1]]
CLUSTERS = np.array([0, 0, 0, 1, 1, 1])
PROBA = np.array([[1, 0], [1, 0], [0.5, 0.5], [0, 1], [0, 1], [0.2, 0.8]])


@pytest.fixture
def graph():
    return KNNGraph(np.array(INDICES), np.array(WEIGHTS), np.ones((6, 2)), labels=CLUSTERS)


@pytest.fixture
def A(graph):
    return graph_matrix(graph)


def test_graph_matrix_layout(A):
    assert A[0, 1] == 0.5 and A[2, 3] == pytest.approx(0.7) and A[5, 0] == pytest.approx(0.1)
    assert A.nnz == 12 and A.sum() == pytest.approx(6.0)


def test_cluster_affinity_by_hand(A):
    C = S.cluster_affinity(A, CLUSTERS, 2)
    np.testing.assert_allclose(C, np.array([[2.3, 0.7], [0.1, 2.9]]) / 9)


def test_cluster_affinity_empty_cluster_is_zero(A):
    C = S.cluster_affinity(A, CLUSTERS, 3)
    assert C.shape == (3, 3) and np.all(C[2] == 0) and np.all(C[:, 2] == 0)


def test_nearest_clusters_symmetrises():
    C = np.array([[1.0, 0.1, 0.4], [0.5, 1.0, 0.0], [0.0, 0.2, 1.0]])
    near = S.nearest_clusters(C)
    # sym: (0,1)=0.3, (0,2)=0.2, (1,2)=0.1
    np.testing.assert_array_equal(near.cluster, [1, 0, 0])
    np.testing.assert_allclose(near.affinity, [0.3, 0.3, 0.2])
    assert S.nearest_clusters(np.ones((1, 1))).cluster.tolist() == [-1]
    isolated = S.nearest_clusters(np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.3], [0.0, 0.1, 1.0]]))
    np.testing.assert_array_equal(isolated.cluster, [-1, 2, 1])
    np.testing.assert_allclose(isolated.affinity, [0.0, 0.2, 0.2])


def test_block_affinity_two_blocks_equals_cluster_affinity(A):
    M = S.block_affinity(A, np.arange(6), 2)
    np.testing.assert_allclose(M, S.cluster_affinity(A, CLUSTERS, 2))


def test_block_affinity_three_blocks_by_hand(A):
    # blocks {0,1}, {2,3}, {4,5}; each entry = block weight / 4
    expected = np.array([[1.1, 0.9, 0.0], [0.3, 0.7, 1.0], [0.1, 0.8, 1.1]]) / 4
    np.testing.assert_allclose(S.block_affinity(A, np.arange(6), 3), expected)


def test_block_affinity_one_node_per_block_is_the_permuted_matrix(A):
    order = np.array([5, 2, 0, 3, 1, 4])
    dense = A.toarray()  # fine for 6 nodes: the reference, not the implementation
    np.testing.assert_allclose(S.block_affinity(A, order, 200), dense[order][:, order])


def test_block_affinity_keeps_the_total_weight():
    rng = np.random.default_rng(0)
    n, k = 1000, 7
    A = sp.csr_matrix((rng.random(n * k), (np.repeat(np.arange(n), k), rng.integers(0, n, n * k))),
                      shape=(n, n))
    order = rng.permutation(n)
    M = S.block_affinity(A, order, 64)
    sizes = np.diff(S.block_bounds(n, 64))
    assert M.shape == (64, 64)
    assert (M * np.outer(sizes, sizes)).sum() == pytest.approx(A.sum())


def test_block_bounds_near_equal():
    np.testing.assert_array_equal(S.block_bounds(6, 4), [0, 2, 3, 5, 6])
    np.testing.assert_array_equal(S.block_bounds(10, 1), [0, 10])
    with pytest.raises(GraphclustError, match="n_blocks"):
        S.block_bounds(3, 4)


def test_block_affinity_rejects_bad_order(A):
    with pytest.raises(GraphclustError, match="permutation"):
        S.block_affinity(A, [0, 0, 1, 2, 3, 4], 2)
    with pytest.raises(GraphclustError, match="scipy.sparse"):
        S.block_affinity(A.toarray(), np.arange(6), 2)


def test_ordering_by_group_then_decreasing_score_then_index():
    groups = np.array([1, 0, 1, 0, 0, 1])
    score = np.array([0.2, 0.9, 0.8, 0.1, 0.5, 0.8])
    np.testing.assert_array_equal(S.ordering(groups, score=score), [1, 4, 3, 2, 5, 0])
    np.testing.assert_array_equal(S.ordering(groups), [1, 3, 4, 0, 2, 5])


def test_ordering_by_label_then_cluster():
    labels = np.array([0, 0, 0, 1, 1, 1])
    clusters = np.array([1, 0, 1, 1, 0, 0])
    np.testing.assert_array_equal(S.ordering(labels, secondary=clusters), [1, 0, 2, 4, 5, 3])


def test_ordered_block_affinity_group_bounds(A):
    blk = S.ordered_block_affinity(A, np.array([1, 1, 0, 1, 0, 0]), n_blocks=6)
    np.testing.assert_array_equal(blk.order, [2, 4, 5, 0, 1, 3])
    np.testing.assert_array_equal(blk.group_bounds, [0, 3, 6])
    np.testing.assert_array_equal(blk.group_ids, [0, 1])


def test_in_degree_counts_appearances_as_neighbour(A):
    np.testing.assert_array_equal(S.in_degree(A), [3, 1, 2, 2, 2, 2])


def test_neighbor_agreement_and_ranking(A):
    agree = S.neighbor_agreement(A, CLUSTERS)
    np.testing.assert_allclose(agree, [1, 1, 0.5, 1, 1, 0.5])
    amb = S.ambiguous_nodes(agree, 3)
    np.testing.assert_array_equal(amb.nodes, [2, 5, 0])  # ties by node id
    np.testing.assert_allclose(amb.scores, [0.5, 0.5, 1.0])


def test_posterior_agreement_by_hand(A):
    agree = S.posterior_agreement(A, PROBA)
    # node 0: (<p0,p1> + <p0,p2>) / 2 = (1 + 0.5) / 2; node 3: (1 + 0.8) / 2;
    # node 5: (<p5,p4> + <p5,p0>) / 2 = (0.8 + 0.2) / 2
    np.testing.assert_allclose(agree, [0.75, 0.75, 0.5, 0.9, 0.9, 0.5])
    np.testing.assert_array_equal(S.ambiguous_nodes(agree, 20).nodes, [2, 5, 0, 1, 3, 4])


def test_ambiguous_nodes_skip_nan():
    amb = S.ambiguous_nodes([0.3, np.nan, 0.1], 5)
    np.testing.assert_array_equal(amb.nodes, [2, 0])


def test_group_strength_and_representatives(A):
    s = S.group_strength(A, CLUSTERS)
    np.testing.assert_allclose(s, [0.9, 0.5, 0.9, 0.8, 1.4, 0.7])
    score = np.array([0.9, 0.5, 0.9, 0.8, 1.4, 0.7])  # exact ties: broken by node id
    reps = S.representatives(CLUSTERS, score, 2)
    assert [r.tolist() for r in reps] == [[0, 2], [4, 3]]
    assert [r.tolist() for r in S.representatives(CLUSTERS, score, 2, n_groups=3)][2] == []


def test_edge_groups_and_histogram(A):
    same = S.edge_groups(A, CLUSTERS)
    assert same.sum() == 10 and A.data[~same].sum() == pytest.approx(0.8)
    h = S.histogram([0.0, 0.5, 1.0, 1.0], bins=2)
    np.testing.assert_array_equal(h.counts, [1, 3])
    np.testing.assert_allclose(h.edges, [0, 0.5, 1])


def test_confusion_rows_in_matched_order():
    clusters = np.array([2, 2, 0, 0, 0, 1])
    labels = np.array([5, 5, 5, 7, 7, 7])
    conf = S.confusion(clusters, labels)
    np.testing.assert_array_equal(conf.clusters, [2, 0, 1])
    np.testing.assert_array_equal(conf.classes, [5, 7])
    np.testing.assert_array_equal(conf.matrix, [[2, 0], [1, 2], [0, 1]])
    assert conf.mapping == {2: 5, 0: 7}


def test_top_features_by_hand():
    X = np.array([[1, 0, 0], [3, 0, 2], [0, 4, 0], [0, 2, 0]], dtype=float)
    top = S.top_features(X, [0, 0, 1, 1], n_top=2)
    np.testing.assert_array_equal(top.features, [[0, 2], [1, 2]])
    np.testing.assert_allclose(top.differences, [[1.0, 0.5], [1.5, -0.5]])


def test_knn_purity_curve_by_hand():
    X = np.array([[0.0], [1.0], [3.0], [10.0], [11.0], [13.0]])
    labels = np.array([0, 0, 1, 1, 1, 1])
    # neighbours: 0:[1,2] 1:[0,2] 2:[1,0] 3:[4,5] 4:[3,5] 5:[4,3]
    curve = S.knn_purity_curve(X, labels, ks=[1, 2])
    assert curve == {1: pytest.approx(5 / 6), 2: pytest.approx(8 / 12)}
    assert set(S.knn_purity_curve(X, labels)) == {1, 5}


def test_subsample_and_map():
    idx = S.subsample(100, 10, 0)
    assert idx.size == 10 and np.all(np.diff(idx) > 0)
    np.testing.assert_array_equal(S.subsample(5, 10), np.arange(5))
    np.testing.assert_array_equal(idx, S.subsample(100, 10, 0))
    Z = np.c_[np.arange(10.0), 2 * np.arange(10.0), np.zeros(10)]
    coords, info = S.map_2d(Z)
    assert coords.shape == (10, 2) and info["explained_variance_ratio"][0] == pytest.approx(1.0)
    with pytest.raises(GraphclustError, match="map method"):
        S.map_2d(Z, "tsne")

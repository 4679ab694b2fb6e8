import numpy as np
import pytest

from graphclust.metrics import (
    cluster_acc,
    match_clusters,
    neighbor_purity,
    purity_curve,
    score_clustering,
)
from graphclust.utils import GraphclustError


def test_acc_invariant_to_label_permutation():
    y = np.array([0, 0, 1, 1, 2, 2])
    perm = np.array([2, 0, 1])
    s = score_clustering(y, perm[y])
    assert s == (1.0, 1.0, 1.0)


def test_acc_by_hand():
    y_true = np.array([0, 0, 0, 1, 1, 1])
    y_pred = np.array([1, 1, 0, 0, 0, 0])
    # best map: 1->0 (2 hits), 0->1 (3 hits) -> 5/6
    assert cluster_acc(y_true, y_pred) == pytest.approx(5 / 6)
    assert match_clusters(y_true, y_pred) == {0: 1, 1: 0}


def test_more_clusters_than_classes():
    y_true = np.array([0, 0, 1, 1])
    y_pred = np.array([0, 1, 2, 2])
    # one of clusters 0/1 stays unmatched -> 3/4
    assert cluster_acc(y_true, y_pred) == pytest.approx(0.75)


def test_acc_matches_brute_force_on_random_labels():
    from itertools import permutations

    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 50)
    p = rng.integers(0, 4, 50)
    best = max(np.mean(np.array(perm)[p] == y) for perm in permutations(range(4)))
    assert cluster_acc(y, p) == pytest.approx(best)


def test_purity_by_hand():
    idx = np.array([[1, 2], [0, 2], [3, 0], [2, 1]])
    y = np.array([0, 0, 1, 1])
    # k=1: 0->1 ok, 1->0 ok, 2->3 ok, 3->2 ok = 1.0; k=2 adds 0->2 no, 1->2 no, 2->0 no, 3->1 no
    assert neighbor_purity(idx, y, 1) == 1.0
    assert neighbor_purity(idx, y) == 0.5
    assert purity_curve(idx, y, [1, 2]) == {1: 1.0, 2: 0.5}


def test_metric_bad_inputs():
    with pytest.raises(GraphclustError, match="equal length"):
        cluster_acc([0, 1], [0])
    with pytest.raises(GraphclustError, match="empty"):
        cluster_acc([], [])
    with pytest.raises(GraphclustError, match="k must"):
        neighbor_purity(np.zeros((2, 1), int), [0, 1], 2)

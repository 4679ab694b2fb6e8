"""Pair miners: format, correctness against the torch kNN reference, determinism."""

import numpy as np
import pytest
import torch

from graphclust.graph.knn import knn_torch
from graphclust.utils import GraphclustError
from siamese import KNNPairMiner, LabelPairMiner, PairBatch, PairMiner
from siamese.pairs import mutual_neighbors


@pytest.fixture
def X():
    return np.random.default_rng(0).normal(size=(30, 4)).astype(np.float32)


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def test_knn_positives_are_true_neighbours(X):
    miner = KNNPairMiner(n_neighbors=3, neg_per_pos=1).prepare(X)
    assert isinstance(miner, PairMiner)
    ref = knn_torch(X, 3).indices
    # same neighbour sets as the brute-force reference (order within a row is irrelevant here)
    np.testing.assert_array_equal(np.sort(miner.neighbors_.numpy(), 1), np.sort(ref, 1))
    pairs = miner.sample(None, _gen(0))
    assert isinstance(pairs, PairBatch)
    assert pairs.left.dtype == torch.int64 and pairs.right.dtype == torch.int64
    assert pairs.target.dtype == torch.float32
    assert pairs.n_pairs == 60  # one positive per point + one negative each
    pos = pairs.target == 1
    assert int(pos.sum()) == 30
    # natural epoch: every point anchors exactly one positive
    assert sorted(pairs.left[pos].tolist()) == list(range(30))
    for i, j in zip(pairs.left[pos].tolist(), pairs.right[pos].tolist()):
        assert j in ref[i]


def test_knn_indices_in_range_no_self_pairs(X):
    pairs = KNNPairMiner(n_neighbors=5, neg_per_pos=3).prepare(X).sample(1000, _gen(1))
    assert pairs.n_pairs == 1000
    assert int(pairs.target.sum()) == 250  # 1/(1+3) positives
    for t in (pairs.left, pairs.right):
        assert t.min() >= 0 and t.max() < 30
    assert not (pairs.left == pairs.right).any()
    # the negatives reach (nearly) every other point: uniform over the others
    neg_right = pairs.right[pairs.target == 0]
    assert len(set(neg_right.tolist())) == 30


def test_knn_deterministic_for_fixed_generator(X):
    miner = KNNPairMiner(n_neighbors=3).prepare(X)
    a, b, c = miner.sample(100, _gen(7)), miner.sample(100, _gen(7)), miner.sample(100, _gen(8))
    for ta, tb in zip(a, b):
        assert torch.equal(ta, tb)
    assert not torch.equal(a.right, c.right)


def test_knn_injected_search_and_checks(X):
    calls = []

    def fake_knn(X, k):
        calls.append(k)
        n = len(X)
        return (np.arange(n)[:, None] + np.arange(1, k + 1)) % n  # a plain index array

    miner = KNNPairMiner(n_neighbors=2, knn=fake_knn).prepare(X)
    assert calls == [2]
    pairs = miner.sample(None, _gen(0))
    pos = pairs.target == 1
    assert ((pairs.right[pos] - pairs.left[pos]) % 30 <= 2).all()
    with pytest.raises(GraphclustError, match="self neighbours"):
        KNNPairMiner(n_neighbors=2, knn=lambda X, k: np.zeros((len(X), k), np.int64)).prepare(X)
    with pytest.raises(GraphclustError, match="n_neighbors"):
        KNNPairMiner(n_neighbors=30).prepare(X)
    with pytest.raises(GraphclustError, match="prepare"):
        KNNPairMiner().sample(10, _gen(0))


def test_mutual_knn_positives_by_hand():
    # 1-d points; nearest neighbours: 0<->1, 3->1, 10<->10.5, 30->10.5. Mutual pairs at k = 1:
    # (0, 1) and (10, 10.5); points 3 and 30 have none and anchor no positive pair.
    X = np.array([[0.0], [1.0], [3.0], [10.0], [10.5], [30.0]], dtype=np.float32)
    miner = KNNPairMiner(n_neighbors=1, mutual=True).prepare(X)
    assert miner.n_anchors_ == 4 and miner.n_candidates_.tolist() == [1, 1, 0, 1, 1, 0]
    assert miner.n_pairs_per_epoch() == 8
    pairs = miner.sample(None, _gen(0))
    pos = pairs.target == 1
    got = sorted(zip(pairs.left[pos].tolist(), pairs.right[pos].tolist()))
    assert got == [(0, 1), (1, 0), (3, 4), (4, 3)]  # one positive per anchor, in an epoch
    # negatives still start from every point, never pair a point with itself
    neg = miner.sample(600, _gen(1))
    left, right = neg.left[neg.target == 0], neg.right[neg.target == 0]
    assert set(left.tolist()) == set(range(6)) and not (left == right).any()
    assert "mutual=True" in repr(miner) and "mutual" not in repr(KNNPairMiner(1))


def test_mutual_knn_positives_match_a_brute_force_reference(X):
    k = 4
    ref = knn_torch(X, k).indices
    mutual = {(i, int(j)) for i in range(len(X)) for j in ref[i] if i in ref[j]}
    miner = KNNPairMiner(n_neighbors=k, mutual=True).prepare(X)
    pairs = miner.sample(20_000, _gen(2))
    pos = pairs.target == 1
    drawn = set(zip(pairs.left[pos].tolist(), pairs.right[pos].tolist()))
    assert drawn == mutual  # every mutual pair is drawn, and nothing else
    anchors = {i for i, _ in mutual}
    assert miner.n_anchors_ == len(anchors)
    # each anchor's partner is uniform over its mutual neighbours: counts per pair of one
    # anchor agree within sampling noise
    left, right = pairs.left[pos].numpy(), pairs.right[pos].numpy()
    for i in list(anchors)[:5]:
        _, counts = np.unique(right[left == i], return_counts=True)
        assert counts.min() > 0.6 * counts.max()
    # the plain miner keeps its draws: mutual=False is the old sampling, bit for bit
    a = KNNPairMiner(n_neighbors=k).prepare(X).sample(None, _gen(3))
    b = KNNPairMiner(n_neighbors=k, mutual=False).prepare(X).sample(None, _gen(3))
    assert torch.equal(a.left, b.left) and torch.equal(a.right, b.right)


def test_mutual_neighbors_equals_the_dense_comparison():
    rng = np.random.default_rng(5)
    n, k = 60, 6
    indices = np.array([rng.choice(np.delete(np.arange(n), i), k, replace=False)
                        for i in range(n)])
    dense = (indices[indices] == np.arange(n)[:, None, None]).any(-1)  # (n, k, k) reference
    np.testing.assert_array_equal(mutual_neighbors(indices), dense)
    assert mutual_neighbors(np.array([[1], [0], [1]])).tolist() == [[True], [True], [False]]


def test_mutual_knn_errors():
    with pytest.raises(GraphclustError, match="mutual must be True or False"):
        KNNPairMiner(3, mutual="yes")
    # an injected search whose neighbours form a cycle 0 -> 1 -> 2 -> 3 -> 4 -> 0: at k = 1
    # no pair is mutual
    X = np.zeros((5, 2), dtype=np.float32)
    cycle = KNNPairMiner(1, mutual=True, knn=lambda X, k: np.array([[1], [2], [3], [4], [0]]))
    with pytest.raises(GraphclustError, match="no point has a mutual neighbour"):
        cycle.prepare(X)


def test_label_miner_positives_share_labels_negatives_do_not():
    y = np.array([0, 0, 0, 1, 1, 2, -1, -1, 1, 2])  # -1: unlabelled
    X = np.zeros((10, 2))
    miner = LabelPairMiner(y, neg_per_pos=1).prepare(X)
    assert miner.n_anchors_ == 8  # every labelled point has a classmate
    pairs = miner.sample(400, _gen(3))
    left, right, pos = pairs.left.numpy(), pairs.right.numpy(), pairs.target.numpy() == 1
    assert (left != right).all()
    assert (y[left[pos]] == y[right[pos]]).all()
    assert (y[left[~pos]] != y[right[~pos]]).all()
    assert not np.isin(np.r_[left, right], [6, 7]).any()  # unlabelled rows never paired
    # every valid positive pair of class 0 shows up
    got = {(int(a), int(b)) for a, b in zip(left[pos], right[pos]) if y[a] == 0}
    assert got == {(a, b) for a in range(3) for b in range(3) if a != b}
    again = miner.sample(400, _gen(3))
    assert torch.equal(again.right, pairs.right)


def test_label_miner_needs_pairs():
    with pytest.raises(GraphclustError, match="two or more"):
        LabelPairMiner([0, 1, 2]).prepare(np.zeros((3, 2)))
    with pytest.raises(GraphclustError, match="two classes"):
        LabelPairMiner([0, 0, 0]).prepare(np.zeros((3, 2)))
    with pytest.raises(GraphclustError, match="labels"):
        LabelPairMiner([0, 0]).prepare(np.zeros((3, 2)))

"""Pair miners: format, correctness against the torch kNN reference, determinism."""

import numpy as np
import pytest
import torch

from graphclust.graph.knn import knn_torch
from graphclust.utils import GraphclustError
from siamese import KNNPairMiner, LabelPairMiner, PairBatch, PairMiner


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

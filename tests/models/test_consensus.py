import numpy as np
import pytest

from graphclust.models.consensus import coassociation_labels
from graphclust.utils import GraphclustError


def test_three_runs_by_hand():
    """Two runs say {0,1,2} {3,4,5}, one says {0,1} {2,3,4,5}.

    Co-association: 1 inside {0,1} and inside {3,4,5}; 2/3 between 2 and {0,1}; 1/3 between
    2 and {3,4,5}; 0 between {0,1} and {3,4,5}. Average linkage first joins 2 to {0,1}
    (distance 1/3), and three groups are the three atoms {0,1}, {2}, {3,4,5}.
    """
    L = np.array([[0, 0, 0, 1, 1, 1],
                  [5, 5, 5, 2, 2, 2],   # label values are only compared within a run
                  [1, 1, 0, 0, 0, 0]])
    assert coassociation_labels(L, 2).tolist() == [0, 0, 0, 1, 1, 1]
    assert coassociation_labels(L, 3).tolist() == [0, 0, 1, 2, 2, 2]
    # weights: the third run alone outweighs the two others; 2 now sits with {3,4,5}
    assert coassociation_labels(L, 2, weights=[1, 1, 5]).tolist() == [0, 0, 1, 1, 1, 1]
    # a run of weight 0 is left out
    assert coassociation_labels(L, 2, weights=[1, 0, 0]).tolist() == [0, 0, 0, 1, 1, 1]


def _brute_force_average_linkage(D: np.ndarray, k: int):
    """Greedy average linkage of rows: join the pair of groups with the lowest mean pairwise
    distance until ``k`` groups remain. Also says whether a non-zero minimum was tied (then
    another valid algorithm may legitimately join another pair)."""
    groups = [[i] for i in range(D.shape[0])]
    tied = False
    while len(groups) > k:
        pairs = sorted((D[np.ix_(groups[a], groups[b])].mean(), a, b)
                       for a in range(len(groups)) for b in range(a + 1, len(groups)))
        if pairs[0][0] > 1e-9 and pairs[1][0] - pairs[0][0] < 1e-9:
            tied = True
        _, a, b = pairs[0]
        groups[a] += groups.pop(b)
    labels = np.empty(D.shape[0], dtype=int)
    for g, members in enumerate(groups):
        labels[members] = g
    return labels, tied


def _same_partition(a, b) -> bool:
    pairs = set(zip(a.tolist(), b.tolist()))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


def test_matches_average_linkage_of_the_rows():
    """Random weighted runs with repeated rows (atoms larger than one row): the atom-level
    linkage gives the partition of the brute-force row-level linkage of the co-association
    (and of scikit-learn's), wherever that is free of ties."""
    from sklearn.cluster import AgglomerativeClustering

    checked = 0
    for seed in range(20):
        rng = np.random.default_rng(seed)
        n, n_runs = 24, 7
        L = np.stack([rng.integers(0, rng.integers(2, 5), n) for _ in range(n_runs)])
        L[:, :8] = L[:, 8:16]  # rows 0-7 repeat rows 8-15
        w = rng.random(n_runs) + 0.1
        C = sum(wr * (lr[:, None] == lr[None, :]) for wr, lr in zip(w / w.sum(), L))
        D = np.clip(1 - C, 0, None)
        np.fill_diagonal(D, 0)
        for k in (2, 3, 5):
            ref, tied = _brute_force_average_linkage(D, k)
            if tied:
                continue
            ours = coassociation_labels(L, k, weights=w)
            assert np.bincount(ours).size == k
            assert _same_partition(ours, ref), (seed, k)
            sk = AgglomerativeClustering(k, metric="precomputed", linkage="average").fit_predict(D)
            assert _same_partition(ours, sk), (seed, k)
            checked += 1
    assert checked >= 20  # about half the (seed, k) cases are tie-free


def test_consensus_repairs_one_wrong_run():
    """Four clean groups of 10; each of three runs glues a different pair of groups. Every
    run is wrong somewhere, yet no two runs are wrong alike, so the consensus is exact."""
    y = np.repeat(np.arange(4), 10)
    glue = [(0, 1), (1, 2), (2, 3)]
    runs = [np.where(y == b, a, y) for a, b in glue]
    assert all(len(np.unique(r)) == 3 for r in runs)
    assert _same_partition(coassociation_labels(np.stack(runs), 4), y)


def test_labels_are_numbered_by_first_appearance():
    L = np.array([[3, 3, 1, 1, 7, 7]] * 2)
    assert coassociation_labels(L, 3).tolist() == [0, 0, 1, 1, 2, 2]


@pytest.mark.parametrize("bad, k, kw, match", [
    (np.zeros(5, dtype=int), 2, {}, "2-D"),
    (np.zeros((2, 5)), 2, {}, "integer"),
    (-np.ones((2, 5), dtype=int), 2, {}, "non-negative"),
    (np.array([[0, 0, 1, 1]]), 3, {}, r"n_clusters must be an integer in \[2, 2\]"),
    (np.array([[0, 0, 1, 1]]), 1, {}, "n_clusters"),
    (np.array([[0, 0, 1, 1]]), True, {}, "n_clusters"),
    (np.array([[0, 0, 1, 1]] * 2), 2, {"weights": [1.0]}, "weights"),
    (np.array([[0, 0, 1, 1]] * 2), 2, {"weights": [0.0, 0.0]}, "weights"),
    (np.array([[0, 0, 1, 1]] * 2), 2, {"weights": [1.0, np.nan]}, "weights"),
    (np.array([[0, 1, 2, 3]]), 2, {"max_atoms": 3}, "max_atoms"),
])
def test_bad_inputs_are_refused(bad, k, kw, match):
    with pytest.raises(GraphclustError, match=match):
        coassociation_labels(bad, k, **kw)

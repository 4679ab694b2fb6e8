"""CRP + mixture generators: exact laws, hygiene, graphs and episodes."""

import numpy as np
import pytest
import torch
from scipy.stats import chi2_contingency
from sklearn.metrics import adjusted_rand_score

from graphclust.data.synthetic import (
    EDGE_FEATURES,
    LabelledEpisodes,
    MixtureEpisodes,
    oracle_labels,
    points_to_data,
    relabel_first_appearance,
    sample_crp,
    sample_crp_sequential,
    sample_mixture,
    sample_separated_mixture,
    standardize,
)
from graphclust.utils import GraphclustError


def test_crp_matches_the_exact_law_for_four_customers():
    # T10: alpha = 1, N = 4: P(K = 1..4) = |s(4, k)| / 4! = 6/24, 11/24, 6/24, 1/24
    labels = sample_crp(4, 1.0, np.random.default_rng(0), size=40_000)
    freq = np.bincount(labels.max(1) + 1, minlength=5)[1:] / 40_000
    np.testing.assert_allclose(freq, [6 / 24, 11 / 24, 6 / 24, 1 / 24], atol=0.01)


def test_crp_mean_number_of_tables_is_the_harmonic_number():
    labels = sample_crp(100, 1.0, np.random.default_rng(1), size=20_000)
    h100 = np.sum(1.0 / np.arange(1, 101))  # 5.187
    assert abs((labels.max(1) + 1).mean() - h100) < 0.05


def test_crp_labels_are_in_first_appearance_order():
    labels = sample_crp(200, 3.0, np.random.default_rng(2), size=50)
    for row in labels:
        assert row[0] == 0
        assert np.all(np.diff(np.maximum.accumulate(row)) <= 1)  # a new label is max + 1
        assert np.bincount(row).sum() == 200 and np.bincount(row).min() > 0


def test_vectorised_and_sequential_crp_agree():
    rng = np.random.default_rng(3)
    fast = sample_crp(10, 1.5, rng, size=3000).max(1) + 1
    slow = np.array([sample_crp_sequential(10, 1.5, rng).max() + 1 for _ in range(3000)])
    ks = np.arange(1, 11)
    table = np.array([[np.sum(fast == k) for k in ks], [np.sum(slow == k) for k in ks]])
    table = table[:, table.sum(0) > 0]
    assert chi2_contingency(table).pvalue > 0.001


def test_crp_accepts_one_alpha_per_draw_and_rejects_bad_alpha():
    labels = sample_crp(50, np.array([1e-6, 1e6]), np.random.default_rng(4), size=2)
    assert labels[0].max() == 0  # alpha -> 0: one table
    assert labels[1].max() >= 45  # alpha -> inf: almost every customer alone
    for bad in (0.0, -1.0, np.nan):
        with pytest.raises(GraphclustError, match="alpha"):
            sample_crp(5, bad, 0)
    with pytest.raises(GraphclustError, match="shape"):
        sample_crp(5, np.ones(3), 0, size=2)


def test_relabel_first_appearance():
    assert relabel_first_appearance(np.array([5, 5, 2, 9, 2])).tolist() == [0, 0, 1, 2, 1]


def test_mixture_sample_shapes_and_reproducibility():
    # T11
    a = sample_mixture(300, 3, np.random.default_rng(5))
    b = sample_mixture(300, 3, np.random.default_rng(5))
    assert a.x.shape == (300, 3) and a.x.dtype == np.float32
    assert a.y.shape == (300,) and a.y.dtype == np.int64
    assert a.means.shape == (a.n_clusters, 3)
    np.testing.assert_array_equal(a.x, b.x)
    np.testing.assert_array_equal(a.y, b.y)
    assert a.y[0] == 0 and np.array_equal(relabel_first_appearance(a.y), a.y)
    np.testing.assert_allclose(a.proportions, np.bincount(a.y) / 300)
    # standardised: median 0 per feature
    np.testing.assert_allclose(np.median(a.x, axis=0), 0, atol=1e-5)


def test_generators_never_touch_global_random_state():
    np_state = np.random.get_state()[1].copy()
    torch_state = torch.get_rng_state().clone()
    sample_mixture(100, 2, 7)
    MixtureEpisodes(n_range=(20, 30), n_neighbors=5).sample(2, np.random.default_rng(7))
    assert np.array_equal(np.random.get_state()[1], np_state)
    assert torch.equal(torch.get_rng_state(), torch_state)


def test_mixture_cap_rejects_large_partitions():
    rng = np.random.default_rng(8)
    for _ in range(20):
        assert sample_mixture(200, 2, rng, alpha=1.0, max_clusters=6).n_clusters <= 6
    with pytest.raises(GraphclustError, match="at most 1 clusters"):
        sample_mixture(50, 2, rng, alpha=1e6, max_clusters=1)


def test_oracle_labels_recover_far_apart_clusters():
    s = sample_mixture(400, 2, np.random.default_rng(9), sigma_mu=100.0, sigma=0.1, alpha=1.0)
    assert adjusted_rand_score(s.y, oracle_labels(s)) == 1.0
    np.testing.assert_allclose(s.raw, (s.x.astype(np.float64) * s.scale + s.center))


def test_separated_mixture_keeps_its_centres_apart():
    rng = np.random.default_rng(10)
    for _ in range(20):
        s = sample_separated_mixture(90, 3, 2, rng, min_separation=15.0)
        d = np.linalg.norm(s.means[:, None] - s.means[None], axis=-1)
        assert d[np.triu_indices(3, 1)].min() >= 15.0
        assert s.n_clusters == 3 and np.isnan(s.alpha)
        assert np.array_equal(np.unique(s.y), [0, 1, 2])  # every cluster has a point
        assert s.y[0] == 0 and np.isclose(s.proportions.sum(), 1.0)
        # the raw points sit around their own centre (15 sigma apart: MAP is exact)
        assert adjusted_rand_score(s.y, oracle_labels(s)) == 1.0
    a = sample_separated_mixture(50, 4, 3, 123)
    b = sample_separated_mixture(50, 4, 3, 123)
    np.testing.assert_array_equal(a.x, b.x)
    assert a.x.shape == (50, 3) and a.x.dtype == np.float32


def test_separated_mixture_bad_input():
    with pytest.raises(GraphclustError, match="n_samples must be an integer >= 3"):
        sample_separated_mixture(2, 3)
    with pytest.raises(GraphclustError, match="could not place 5 centres"):
        sample_separated_mixture(50, 5, 1, 0, min_separation=100.0)
    with pytest.raises(GraphclustError, match="min_separation"):
        sample_separated_mixture(50, 3, min_separation=0.0)


def test_standardize_is_robust_and_handles_constant_data():
    X = np.array([[0.0, 0.0], [1.0, 2.0], [2.0, 4.0], [100.0, 200.0]])
    st = standardize(X)
    np.testing.assert_allclose(st.center, [1.5, 3.0])
    assert st.scale > 0 and st.x.dtype == np.float32
    const = standardize(np.ones((5, 2)))
    assert const.scale == 1.0 and np.all(const.x == 0)


def test_points_to_data_graph_and_edge_features():
    x = np.array([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0], [7.0, 0.0]], dtype=np.float32)
    d = points_to_data(x, 2, y=np.array([0, 0, 1, 1]))
    assert d.edge_index.shape == (2, 8) and d.edge_attr.shape == (8, len(EDGE_FEATURES))
    # node 0's neighbours are 1 (distance 1) and 2 (distance 3): scaled distances 1/3 and 1
    rows = d.edge_index[1] == 0
    assert d.edge_index[0, rows].tolist() == [1, 2]
    np.testing.assert_allclose(d.edge_attr[rows, 1].numpy(), [1 / 3, 1.0], atol=1e-6)
    # log weights of a row: the self-tuning Gaussian, row-normalised
    w = np.exp(-np.array([1.0, 9.0]) / (2 * 9.0))
    np.testing.assert_allclose(d.edge_attr[rows, 0].numpy(), np.log(w / w.sum()), atol=1e-5)
    assert d.num_clusters.tolist() == [2]


def test_points_to_data_edge_cases():
    one = points_to_data(np.zeros((1, 2)), 15)
    assert one.num_nodes == 1 and one.edge_index.shape == (2, 0)
    same = points_to_data(np.ones((6, 2)), 3)
    assert torch.isfinite(same.edge_attr).all()
    with pytest.raises(GraphclustError, match="neighbours"):
        points_to_data(np.zeros((5, 2)), 5)
    with pytest.raises(GraphclustError, match="NaN"):
        points_to_data(np.array([[0.0, np.nan], [1.0, 1.0], [2.0, 2.0]]), 1)


def test_mixture_episodes_batch():
    ep = MixtureEpisodes(dim=2, n_range=(20, 40), n_neighbors=5, max_clusters=4)
    b = ep.sample(3, np.random.default_rng(10))
    assert b.num_graphs == 3 and b.x.shape[1] == 2
    assert b.edge_index.shape[1] == 5 * b.num_nodes
    for g in range(3):
        yg = b.y[b.batch == g]
        assert int(yg.max()) + 1 == int(b.num_clusters[g]) <= 4
    c = ep.sample(3, np.random.default_rng(10))
    assert torch.equal(b.x, c.x) and torch.equal(b.edge_index, c.edge_index)
    with pytest.raises(GraphclustError, match="smaller than the smallest"):
        MixtureEpisodes(n_range=(10, 20), n_neighbors=10)


def test_labelled_episodes_use_distinct_classes_per_cluster():
    rng = np.random.default_rng(11)
    y = np.repeat(np.arange(4), 50)
    # feature 0 encodes the class (spacing 100, jitter 0.01): it survives standardisation
    X = np.column_stack([100.0 * y + 0.01 * rng.normal(size=200), rng.normal(size=(200, 2))])
    ep = LabelledEpisodes(X, y, n_range=(30, 60), n_neighbors=5)
    b = ep.sample(4, rng)
    for g in range(4):
        sel = (b.batch == g).numpy()
        yg, f0 = b.y[sel].numpy(), b.x[sel, 0].numpy()
        k = int(yg.max()) + 1
        assert 30 <= sel.sum() <= 60 and k <= 4
        means = np.array([f0[yg == c].mean() for c in range(k)])
        spread = max(np.ptp(f0[yg == c]) for c in range(k))
        if k > 1:  # one class per cluster, a different one for every cluster
            assert spread < 0.01 * np.diff(np.sort(means)).min()
    with pytest.raises(GraphclustError, match="cannot be drawn"):
        LabelledEpisodes(X, y, n_range=(30, 500), n_neighbors=5)

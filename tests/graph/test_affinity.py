import numpy as np
import pytest

from graphclust.graph.affinity import (
    get_kernel,
    heat,
    row_normalize,
    self_tuning_gaussian,
    uniform,
)
from graphclust.utils import GraphclustError


def test_self_tuning_gaussian_by_hand():
    d = np.array([[1.0, 2.0], [0.5, 0.5]])
    w = self_tuning_gaussian(d)
    # row 0: s = 2 -> exp(-1/8), exp(-4/8); row 1: s = 0.5 -> exp(-1/2) twice
    np.testing.assert_allclose(w[0], [np.exp(-1 / 8), np.exp(-0.5)], rtol=1e-6)
    np.testing.assert_allclose(w[1], [np.exp(-0.5)] * 2, rtol=1e-6)
    # bandwidth from the first neighbour instead
    w1 = self_tuning_gaussian(d, k_sigma=1)
    np.testing.assert_allclose(w1[0], [np.exp(-0.5), np.exp(-2.0)], rtol=1e-6)


def test_gaussian_zero_bandwidth_duplicates():
    d = np.array([[0.0, 0.0, 0.0]])
    np.testing.assert_array_equal(self_tuning_gaussian(d), [[1, 1, 1]])
    d = np.array([[0.0, 1.0]])
    w = self_tuning_gaussian(d, k_sigma=1)
    np.testing.assert_array_equal(w, [[1, 0]])


def test_uniform_and_heat():
    d = np.array([[1.0, 3.0]])
    np.testing.assert_array_equal(uniform(d), [[1, 1]])
    np.testing.assert_allclose(heat(d, t=2.0), [[np.exp(-0.5), np.exp(-4.5)]], rtol=1e-6)
    # default t = mean squared distance = 5
    np.testing.assert_allclose(heat(d), [[np.exp(-1 / 5), np.exp(-9 / 5)]], rtol=1e-6)


def test_row_normalize():
    w = row_normalize(np.array([[1.0, 3.0], [0.0, 0.0]]))
    np.testing.assert_allclose(w, [[0.25, 0.75], [0.5, 0.5]])


def test_bad_kernel_inputs():
    with pytest.raises(GraphclustError, match="unknown kernel"):
        get_kernel("cosine-ish")
    with pytest.raises(GraphclustError, match="non-negative"):
        uniform(np.array([[-1.0]]))
    with pytest.raises(GraphclustError, match="k_sigma"):
        self_tuning_gaussian(np.ones((2, 2)), k_sigma=3)
    with pytest.raises(GraphclustError, match="t must be"):
        heat(np.ones((2, 2)), t=-1.0)

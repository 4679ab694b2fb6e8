import numpy as np
import pytest

from graphclust.data import ondisk
from graphclust.data.ondisk import write_mixture_npy
from graphclust.utils import GraphclustError


def test_mixture_is_seeded_and_blockwise(tmp_path, monkeypatch):
    a = write_mixture_npy(tmp_path / "a.npy", 1000, 12, n_clusters=3, latent_dim=2,
                          labels_path=tmp_path / "ya.npy")
    Xa = np.load(a)
    assert Xa.shape == (1000, 12) and Xa.dtype == np.float32 and np.isfinite(Xa).all()
    y = np.load(tmp_path / "ya.npy")
    assert set(np.unique(y)) <= {0, 1, 2}
    # separated clusters: a point's class mean is nearer than the other class means
    means = np.stack([Xa[y == c].mean(0) for c in range(3)])
    d = ((Xa[:, None, :] - means[None]) ** 2).sum(-1)
    assert (d.argmin(1) == y).mean() > 0.9
    c = write_mixture_npy(tmp_path / "c.npy", 1000, 12, n_clusters=3, latent_dim=2)
    np.testing.assert_array_equal(np.load(c), Xa)  # same seed, same file
    monkeypatch.setattr(ondisk, "_BLOCK_ROWS", 300)  # written in 4 blocks: still valid, seeded
    b = write_mixture_npy(tmp_path / "b.npy", 1000, 12, n_clusters=3, latent_dim=2)
    b2 = write_mixture_npy(tmp_path / "b2.npy", 1000, 12, n_clusters=3, latent_dim=2)
    np.testing.assert_array_equal(np.load(b), np.load(b2))


def test_mixture_errors(tmp_path):
    with pytest.raises(GraphclustError, match=".npy"):
        write_mixture_npy(tmp_path / "a.npz", 10)
    with pytest.raises(GraphclustError, match="n_samples"):
        write_mixture_npy(tmp_path / "a.npy", 0)
    write_mixture_npy(tmp_path / "a.npy", 10, 4)
    with pytest.raises(GraphclustError, match="exists already"):
        write_mixture_npy(tmp_path / "a.npy", 10, 4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npy"]

"""SiameseEmbedder: learning on separable blobs, determinism, persistence, input errors."""

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError

from graphclust.utils import GraphclustError
from siamese import LabelPairMiner, SiameseEmbedder

SMALL = dict(hidden=(32,), out_dim=2, n_epochs=10, batch_size=32, lr=5e-3, verbose=False)


@pytest.fixture(scope="module")
def blobs():
    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(0, 1, (100, 20)), rng.normal(3, 1, (100, 20))]).astype(np.float32)
    return X, np.repeat([0, 1], 100)


@pytest.fixture(scope="module")
def fitted(blobs):
    return SiameseEmbedder(random_state=0, **SMALL).fit(blobs[0])


def _nn_purity(Z, y, k=5):
    d = ((Z[:, None, :] - Z[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    nn = np.argsort(d, axis=1)[:, :k]
    return (y[nn] == y[:, None]).mean()


def test_blobs_are_separated(fitted, blobs):
    X, y = blobs
    Z = fitted.transform(X)
    assert Z.shape == (200, 2) and Z.dtype == np.float32
    assert _nn_purity(Z, y) == 1.0
    # linearly separable: the projection on the centre difference splits the blobs
    w = Z[y == 1].mean(0) - Z[y == 0].mean(0)
    s = Z @ w
    assert s[y == 0].max() < s[y == 1].min()
    assert len(fitted.history_) == 10 and fitted.history_[-1] < fitted.history_[0]
    assert fitted.n_features_in_ == 20


def test_same_seed_same_embedding_other_seed_differs(fitted, blobs):
    X = blobs[0]
    again = SiameseEmbedder(random_state=0, **SMALL).fit(X)
    np.testing.assert_array_equal(again.transform(X), fitted.transform(X))
    other = SiameseEmbedder(random_state=1, **SMALL).fit(X)
    assert not np.array_equal(other.transform(X), fitted.transform(X))


def test_fit_leaves_global_rngs_alone(blobs):
    import torch

    torch_state, np_state = torch.random.get_rng_state(), np.random.get_state()[1].copy()
    SiameseEmbedder(random_state=0, **{**SMALL, "n_epochs": 1}).fit(blobs[0])
    assert torch.equal(torch.random.get_rng_state(), torch_state)
    assert np.array_equal(np.random.get_state()[1], np_state)


def test_fit_transform_and_pluggable_miner(blobs):
    X, y = blobs
    miner = LabelPairMiner(y)
    est = SiameseEmbedder(random_state=0, miner=miner, **{**SMALL, "n_epochs": 3})
    Z = est.fit_transform(X)
    assert Z.shape == (200, 2)
    assert miner.n_anchors_ is None  # the estimator prepared a copy
    assert est.miner_.n_anchors_ == 200


def test_save_load_round_trip(fitted, blobs, tmp_path):
    path = fitted.save(tmp_path / "siamese.safetensors")
    assert [p.name for p in tmp_path.iterdir()] == ["siamese.safetensors"]  # no temp left
    loaded = SiameseEmbedder.load(path, device="cpu")
    np.testing.assert_array_equal(loaded.transform(blobs[0]), fitted.transform(blobs[0]))
    assert loaded.get_params()["hidden"] == (32,) and loaded.lr == SMALL["lr"]
    assert loaded.history_ == pytest.approx(fitted.history_)
    with pytest.raises(GraphclustError, match="exists"):
        fitted.save(path, overwrite=False)


def test_load_rejects_corrupt_and_foreign_files(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    with pytest.raises(GraphclustError, match="not a readable safetensors"):
        SiameseEmbedder.load(bad)
    import torch
    from safetensors.torch import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(GraphclustError, match="not one written by SiameseEmbedder"):
        SiameseEmbedder.load(foreign)
    with pytest.raises(GraphclustError, match="no such file"):
        SiameseEmbedder.load(tmp_path / "missing.safetensors")


def test_bad_inputs(fitted, blobs):
    X = blobs[0].copy()
    X[3, 4] = np.nan
    with pytest.raises(GraphclustError, match="NaN"):
        SiameseEmbedder(**SMALL).fit(X)
    with pytest.raises(GraphclustError, match="fitted on 20"):
        fitted.transform(np.zeros((5, 19)))
    with pytest.raises(NotFittedError):
        SiameseEmbedder().transform(np.zeros((5, 20)))
    with pytest.raises(GraphclustError, match="batch_size"):
        SiameseEmbedder(batch_size=0).fit(blobs[0])
    with pytest.raises(GraphclustError, match="miner must have"):
        SiameseEmbedder(miner="knn").fit(blobs[0])

"""SiameseEmbedder: learning on separable blobs, determinism, persistence, input errors."""

import numpy as np
import pytest
import torch
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


def _noise(x, generator):
    return x + 0.3 * torch.randn(x.shape, generator=generator, dtype=x.dtype)


def test_identity_augment_changes_nothing(blobs):
    # the augmentation generator is drawn after the others: an identity augment trains the same
    Z0 = SiameseEmbedder(random_state=3, **SMALL).fit_transform(blobs[0])
    Z1 = SiameseEmbedder(random_state=3, augment=lambda x, g: x, **SMALL).fit_transform(blobs[0])
    np.testing.assert_array_equal(Z0, Z1)


def test_augment_sees_both_arms_of_every_pair(blobs):
    X = blobs[0]
    calls = []

    def spy(x, generator):
        calls.append((x.clone(), generator))
        return x

    emb = SiameseEmbedder(random_state=0, augment=spy, **{**SMALL, "n_epochs": 1}).fit(X)
    # default miner: 200 positives + 200 negatives = 400 pairs in batches of 32 -> 13 calls
    assert len(calls) == 13
    assert [c[0].shape[0] for c in calls] == [64] * 12 + [32]
    assert all(isinstance(g, torch.Generator) for _, g in calls)
    # every row handed over is a row of X (left arms then right arms)
    rows = torch.cat([c[0] for c in calls]).numpy()
    assert np.isin(rows.view([("", rows.dtype)] * rows.shape[1]),
                   X.view([("", X.dtype)] * X.shape[1])).all()
    assert emb.augment is spy


def test_random_augment_is_seeded_and_matters(blobs):
    X, y = blobs
    a = SiameseEmbedder(random_state=1, augment=_noise, **SMALL).fit_transform(X)
    b = SiameseEmbedder(random_state=1, augment=_noise, **SMALL).fit_transform(X)
    plain = SiameseEmbedder(random_state=1, **SMALL).fit_transform(X)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, plain)
    assert _nn_purity(a, y) > 0.95  # still separates the blobs


def test_augment_errors_and_save(blobs, tmp_path):
    with pytest.raises(GraphclustError, match="augment must be a callable"):
        SiameseEmbedder(augment="shift", **SMALL).fit(blobs[0])
    with pytest.raises(GraphclustError, match="augment returned Tensor of shape"):
        SiameseEmbedder(augment=lambda x, g: x[:, :5], **SMALL).fit(blobs[0])
    with pytest.raises(GraphclustError, match="augment returned ndarray"):
        SiameseEmbedder(augment=lambda x, g: x.numpy(), **SMALL).fit(blobs[0])
    emb = SiameseEmbedder(random_state=0, augment=_noise, **{**SMALL, "n_epochs": 1}).fit(blobs[0])
    back = SiameseEmbedder.load(emb.save(tmp_path / "e.safetensors"))
    assert back.augment is None
    np.testing.assert_array_equal(back.transform(blobs[0]), emb.transform(blobs[0]))


class _OneRank:
    """A one-process stand-in for DistContext (shard = everything, reductions = identity)."""

    world_size, rank = 1, 0

    def shard(self, n):
        return slice(0, n)

    def all_reduce_metrics(self, values):
        return values


def test_sharded_epoch_augments_like_the_plain_one(blobs):
    from siamese.embedder import _Arms, _train_epoch, _train_epoch_sharded
    from siamese.losses import ContrastiveLoss
    from siamese.networks import MLPEmbedding
    from siamese.pairs import KNNPairMiner

    X = torch.from_numpy(blobs[0])
    pairs = KNNPairMiner(device="cpu").prepare(blobs[0]).sample(None, torch.Generator().manual_seed(0))
    losses, weights = [], []
    for sharded in (False, True):
        net = MLPEmbedding(20, (16,), 2, generator=torch.Generator().manual_seed(0))
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        arms = _Arms(_noise, torch.Generator().manual_seed(5))
        if sharded:
            loss = _train_epoch_sharded(net, ContrastiveLoss(), opt, X, pairs, 32, _OneRank(), arms)
        else:
            loss = _train_epoch(net, ContrastiveLoss(), opt, X, pairs, 32, arms)
        losses.append(loss)
        weights.append(next(net.parameters()).detach().clone())
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)
    torch.testing.assert_close(weights[0], weights[1])

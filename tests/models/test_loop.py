"""The generic training loop and staged pipeline: resume, refused checkpoints, graph stage."""

import numpy as np
import pytest
import torch

from graphclust.models.kdvae import KAutoencoderRecipe
from graphclust.models.loop import FitConfig, train_cluster_model
from graphclust.models.mixture import build_gmvae
from graphclust.models.pipeline import KNNGraphBuilder, PretrainConfig, stage_seeds
from graphclust.models.pretrain import GMMInit
from graphclust.models.regularizer import GraphRegularizer
from graphclust.models.staged import fit_cluster_model, run_seeds
from graphclust.nn.likelihood import GaussianLikelihood
from graphclust.utils import GraphclustError


def blobs(n=40, seed=0):
    rng = np.random.default_rng(seed)
    y = np.repeat([0, 1], n // 2)
    return (rng.normal(size=(n, 4)) * 0.5 + 6 * np.eye(2, 4)[y]).astype(np.float32), y


def fit(X, run_dir=None, resume=False, epochs=3, regularizer=None, y=None):
    return fit_cluster_model(
        X, recipe=KAutoencoderRecipe(False, 2, (8,), (8,), pair_epochs=3), n_clusters=2,
        likelihood=GaussianLikelihood(), init=GMMInit(), pretrain=PretrainConfig(epochs=3,
        batch_size=16), train=FitConfig(n_epochs=epochs, batch_size=16), regularizer=regularizer,
        seed=0, device=torch.device("cpu"), y=y, run_dir=run_dir, resume=resume,
    )


def test_seeds_extend_the_dgg_pipelines():
    a, b = stage_seeds(3), run_seeds(3)
    assert all(b[k] == v for k, v in a.items()) and "start" in b


def test_resume_equals_uninterrupted(tmp_path):
    X, y = blobs()
    full = fit(X, y=y)
    part_dir = tmp_path / "part"
    part_dir.mkdir()
    fit(X, part_dir, epochs=1)
    resumed = fit(X, part_dir, resume=True, y=y)
    assert [r["loss"] for r in resumed.history] == [r["loss"] for r in full.history]
    np.testing.assert_array_equal(resumed.gamma, full.gamma)
    assert resumed.stage_times["pretrain_ae"]["cached"] and resumed.stage_times["start"]["cached"]
    for name in ("ae.safetensors", "init.npz", "pretrained.safetensors", "checkpoint.pt",
                 "model.safetensors"):
        assert (part_dir / name).is_file()
    with pytest.raises(GraphclustError, match="beyond n_epochs"):
        fit(X, part_dir, resume=True, epochs=2)


def test_checkpoint_of_other_settings_is_refused(tmp_path):
    X, _ = blobs()
    fit(X, tmp_path, epochs=1)
    ckpt = tmp_path / "checkpoint.pt"
    model = KAutoencoderRecipe(False, 2, (8,), (8,)).build(4, 2, GaussianLikelihood(), None)
    with pytest.raises(GraphclustError, match="other settings"):
        train_cluster_model(model, torch.from_numpy(X), FitConfig(n_epochs=2), None,
                            torch.Generator(), torch.Generator(), checkpoint=ckpt, resume=True,
                            fingerprint="something else")


def test_builder_regulariser_builds_and_caches_its_graph(tmp_path):
    X, y = blobs()
    reg = GraphRegularizer(KNNGraphBuilder(k=3), weight=0.5)
    res = fit(X, tmp_path, regularizer=reg, y=y)
    assert res.regularizer.graph.n_nodes == 40 and res.regularizer.graph.k == 3
    assert (tmp_path / "graph.npz").is_file() and res.pi.shape == (40, 2)
    np.testing.assert_allclose(res.pi.sum(1), 1, rtol=1e-5)
    again = fit(X, tmp_path, resume=True, regularizer=reg, y=y)
    assert again.stage_times["graph"]["cached"]
    np.testing.assert_array_equal(again.regularizer.graph.indices, res.regularizer.graph.indices)


def test_loop_refuses_a_model_without_the_interface():
    X, _ = blobs()
    vade = build_gmvae(4, 2, GaussianLikelihood(), 2, (8,))
    with pytest.raises(GraphclustError, match="ClusterModel"):
        train_cluster_model(vade, torch.from_numpy(X), FitConfig(n_epochs=1), None,
                            torch.Generator(), torch.Generator())
    with pytest.raises(GraphclustError, match="max_grad_norm"):
        FitConfig(max_grad_norm=0.0).validate()

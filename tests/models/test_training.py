"""The staged pipeline and training loop: resume == uninterrupted, one seed fixes all."""

import numpy as np
import pytest
import torch

from graphclust.models.checkpoint import load_state, load_weights
from graphclust.models.pipeline import (
    KNNGraphBuilder,
    PretrainConfig,
    fit_gmvae,
    stage_seeds,
)
from graphclust.models.pretrain import GMMInit
from graphclust.models.training import TrainConfig, _GradClip, parse_grad_clip
from graphclust.nn.likelihood import GaussianLikelihood
from graphclust.utils import GraphclustError


def blobs(n=60, d=5, seed=0):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(3), n // 3)
    X = (rng.normal(size=(n, d)) * 0.5 + 6 * np.eye(3, d)[y]).astype(np.float32)
    return X, y


class Stop(Exception):
    pass


def fit(X, y, run_dir=None, resume=False, n_epochs=4, callbacks=(), graph="build", seed=7,
        pi_update="epoch", sample=1, grad_clip=TrainConfig.grad_clip):
    return fit_gmvae(
        X, n_clusters=3, likelihood=GaussianLikelihood(), latent_dim=2, hidden=(8,),
        posterior="head", init=GMMInit(n_init=1),
        graph=KNNGraphBuilder(k=4) if graph == "build" else graph,
        pretrain=PretrainConfig(epochs=5, batch_size=16),
        train=TrainConfig(n_epochs=n_epochs, batch_size=16, neighbor_sample=sample,
                          pi_update=pi_update, grad_clip=grad_clip),
        seed=seed, device=torch.device("cpu"), y=y, run_dir=run_dir, resume=resume,
        callbacks=callbacks,
    )


def same(a, b):
    np.testing.assert_array_equal(a.gamma, b.gamma)
    np.testing.assert_array_equal(a.pi, b.pi)
    assert [r["loss"] for r in a.history] == [r["loss"] for r in b.history]
    for (k, v), (k2, v2) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert k == k2 and torch.equal(v, v2), k


def interrupted_after_2(X, y, tmp_path, **kw):
    """A run folder whose training was stopped by a callback after epoch 2."""

    def stop_after_2(record, history):
        if record["epoch"] == 2:
            raise Stop

    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(Stop):
        fit(X, y, run, callbacks=[stop_after_2], **kw)
    return run


def test_resume_after_interruption_equals_uninterrupted_run(tmp_path):
    X, y = blobs()
    full = fit(X, y)
    run = interrupted_after_2(X, y, tmp_path)
    assert load_state(run / "checkpoint.pt")["epoch"] == 2
    resumed = fit(X, y, run, resume=True)
    same(resumed, full)
    assert resumed.stage_times["pretrain_ae"]["cached"] and resumed.stage_times["head"]["cached"]
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3, 4]


def test_fewer_epochs_then_resume_to_more(tmp_path):
    X, y = blobs()
    full = fit(X, y, n_epochs=3)
    run = tmp_path / "run"
    run.mkdir()
    fit(X, y, run, n_epochs=1)
    same(fit(X, y, run, resume=True, n_epochs=3), full)


def test_same_seed_same_result_and_global_rng_untouched():
    X, y = blobs()
    torch_state, np_state = torch.get_rng_state(), np.random.get_state()
    a = fit(X, y, n_epochs=2)
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert np.array_equal(np.random.get_state()[1], np_state[1])
    b = fit(X, y, n_epochs=2)
    same(a, b)
    c = fit(X, y, n_epochs=2, seed=8)
    assert not np.array_equal(a.gamma, c.gamma)
    assert len(set(stage_seeds(7).values())) == len(stage_seeds(7))


def test_artifacts_are_safe_to_load_and_other_settings_are_refused(tmp_path):
    X, y = blobs()
    run = tmp_path / "run"
    run.mkdir()
    fit(X, y, run, n_epochs=1)
    for name in ("ae.safetensors", "init.npz", "graph.npz", "pretrained.safetensors",
                 "checkpoint.pt", "model.safetensors"):
        assert (run / name).is_file(), name
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    assert {"model", "optimizer", "scheduler", "rng", "pi", "history"} <= set(state)
    _, meta = load_weights(run / "model.safetensors")
    assert "fingerprint" in meta
    with pytest.raises(GraphclustError, match="other settings"):
        fit(X, y, run, resume=True, seed=8)


def test_vade_mode_and_batch_pi_updates():
    X, y = blobs()
    vade = fit(X, y, graph=None, n_epochs=2)
    assert vade.pi is None and vade.graph is None
    dgg = fit(X, y, n_epochs=2, pi_update="batch", sample=None)
    np.testing.assert_allclose(dgg.pi.sum(1), 1.0, rtol=1e-5)
    assert dgg.history[-1]["acc"] == 1.0
    with pytest.raises(GraphclustError, match="pi_update"):
        fit(X, y, pi_update="never")


def test_grad_clip_by_hand():
    """The limit is factor x the previous epoch's median norm; the first epoch only measures."""
    w = torch.nn.Parameter(torch.zeros(2))
    clip = _GradClip([w], factor=2.0)
    clip.start_epoch([])  # first epoch: no median yet
    w.grad = torch.tensor([3.0, 4.0])
    clip()
    assert torch.equal(w.grad, torch.tensor([3.0, 4.0]))
    assert clip.summary() == {"grad_norm_median": 5.0, "grad_norm_max": 5.0, "clipped": 0.0}
    clip.start_epoch([{"grad_norm_median": 2.0}])  # limit 4
    w.grad = torch.tensor([3.0, 4.0])
    clip()
    torch.testing.assert_close(w.grad, torch.tensor([2.4, 3.2]))  # scaled to norm 4
    w.grad = torch.tensor([0.0, 1.0])
    clip()
    torch.testing.assert_close(w.grad, torch.tensor([0.0, 1.0]))
    assert clip.summary() == {"grad_norm_median": 3.0, "grad_norm_max": 5.0, "clipped": 0.5}
    off = _GradClip([w], factor=None)
    off.start_epoch([{"grad_norm_median": 2.0}])
    w.grad = torch.tensor([30.0, 40.0])
    off()
    assert torch.equal(w.grad, torch.tensor([30.0, 40.0]))


def test_tight_grad_clip_cuts_steps_and_resumes_exactly(tmp_path):
    """A clip just above the median cuts about half the steps; a resumed run clips alike."""
    X, y = blobs()
    full = fit(X, y, grad_clip=1.01)
    first, later = full.history[0], full.history[1:]
    assert first["clipped"] == 0.0
    assert all(0.2 < r["clipped"] < 0.8 for r in later)
    assert all(r["grad_norm_max"] >= r["grad_norm_median"] > 0 for r in full.history)
    assert fit(X, y, grad_clip=None).history[1]["loss"] != later[0]["loss"]
    run = interrupted_after_2(X, y, tmp_path, grad_clip=1.01)
    same(fit(X, y, run, resume=True, grad_clip=1.01), full)
    with pytest.raises(GraphclustError, match="grad_clip must be > 1"):
        fit(X, y, grad_clip=1.0)


def test_parse_grad_clip():
    assert parse_grad_clip("none") is None and parse_grad_clip(" None ") is None
    assert parse_grad_clip("7.5") == 7.5
    for bad in ("1", "0.5", "x", ""):
        with pytest.raises(GraphclustError, match="--grad-clip must be a number > 1"):
            parse_grad_clip(bad)

"""Data-parallel training: 2 gloo processes on CPU match one process, only rank 0 writes,
a distributed run resumes, and the sharded objective adds up to the whole batch's."""

import itertools
import json
import os
import socket
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as tdist

from graphclust.cli import main
from graphclust.distributed import init_distributed, launched_by_torchrun, shard_bounds
from graphclust.graph.graph import KNNGraph
from graphclust.models.batching import NeighborBatches
from graphclust.models.checkpoint import load_weights
from graphclust.models.mixture import build_gmvae
from graphclust.nn.dgg import DGGObjective
from graphclust.nn.likelihood import GaussianLikelihood
from graphclust.utils import GraphclustError

REPO = Path(__file__).resolve().parent.parent
GLOO = tdist.is_available() and tdist.is_gloo_available()
needs_gloo = pytest.mark.skipif(
    not GLOO, reason="this torch build has no torch.distributed gloo backend")

TINY = ["--hidden", "16", "--latent-dim", "2", "--pretrain-epochs", "5", "--batch-size", "32",
        "--n-neighbors", "5", "-q"]

# Runs the CLI under torchrun, records every file this rank renames into place or folder it
# creates (all graphclust writes go through atomic_path -> os.replace), then fits a Siamese
# embedder on the same process group.
WORKER = textwrap.dedent("""
    import json, os, pathlib, sys
    import numpy as np

    writes = []
    _replace, _mkdir = os.replace, pathlib.Path.mkdir

    def replace(src, dst, *a, **k):
        writes.append(str(dst))
        return _replace(src, dst, *a, **k)

    def mkdir(self, *a, **k):
        writes.append(str(self))
        return _mkdir(self, *a, **k)

    os.replace, pathlib.Path.mkdir = replace, mkdir

    from graphclust.cli import main
    from graphclust.distributed import init_distributed, shutdown
    from siamese import SiameseEmbedder

    ctx = init_distributed("cpu")  # the CLI joins this group and leaves it open
    rc = main(sys.argv[2:])
    X = np.load(sys.argv[3])["X"]  # argv: worker OUT train DATA ...
    emb = SiameseEmbedder(hidden=(16,), n_epochs=2, batch_size=25, random_state=0,
                          verbose=False, distributed=ctx).fit(X)
    Z = emb.transform(X)
    os.replace, pathlib.Path.mkdir = _replace, _mkdir
    out = pathlib.Path(sys.argv[1])
    np.save(out / f"siamese{ctx.rank}.npy", Z)
    (out / f"writes{ctx.rank}.json").write_text(json.dumps({"rc": rc, "writes": writes}))
    shutdown(ctx)
""")


def blobs(tmp_path, n=120):
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], n // 3)
    X = (rng.normal(size=(n, 5)) * 0.5 + 8 * np.eye(3, 5)[y]).astype(np.float32)
    path = tmp_path / "blobs.npz"
    np.savez(path, X=X, y=y)
    return path, X


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


#: what a rank prints when gloo's threads are torn down under it at process exit (seen about
#: once in a dozen CI-like runs, after every output had been written; not reproducible on demand)
TEARDOWN_ABORT = "terminate called without an active exception"


def torchrun(*args: str, finished: Callable[[], bool] | None = None
             ) -> tuple[subprocess.CompletedProcess, bool]:
    """Run ``args`` on 2 local processes; returns (process, whether teardown aborted).

    A non-zero exit fails the test, except the known gloo teardown abort, and that only when
    ``finished()`` confirms the job wrote all of its outputs (the caller then checks them in
    full); the abort is reported as a warning so it stays visible.
    """
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
           "--master-addr", "127.0.0.1", "--master-port", str(free_port()), *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env, cwd=REPO, timeout=180)
    aborted = (proc.returncode != 0 and TEARDOWN_ABORT in proc.stderr
               and finished is not None and finished())
    if aborted:
        warnings.warn(f"torchrun exited {proc.returncode} from the known gloo teardown abort "
                      "after the job had finished; its outputs are checked in full", stacklevel=2)
    else:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc, aborted


def losses(run: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "log.jsonl").read_text().splitlines()]


# --------------------------------------------------------------------------- unit level
def test_shard_bounds_cover_rows_once_in_rank_order():
    for n in (0, 1, 5, 32, 33):
        for world in (1, 2, 3):
            bounds = [shard_bounds(n, r, world) for r in range(world)]
            assert bounds[0][0] == 0 and bounds[-1][1] == n
            assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))
            sizes = [hi - lo for lo, hi in bounds]
            assert max(sizes) - min(sizes) <= 1
    assert shard_bounds(1, 0, 2) == (0, 0) and shard_bounds(1, 1, 2) == (0, 1)


def test_torchrun_environment_is_detected_and_required(monkeypatch):
    env = {"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"}
    assert launched_by_torchrun(env)
    assert not launched_by_torchrun({"RANK": "0"})
    for key in env:
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(GraphclustError, match="torchrun"):
        init_distributed("cpu")


def test_train_distributed_flag_without_torchrun_is_refused(tmp_path, capsys, monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    path, _ = blobs(tmp_path)
    assert main(["train", str(path), "-o", str(tmp_path / "r"), "--distributed", *TINY]) == 2
    assert "torchrun" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
    assert main(["train", str(path), "--model", "kdae", "-o", str(tmp_path / "r"),
                 "--distributed", *TINY]) == 2
    assert "dgg / vade" in capsys.readouterr().err


@pytest.mark.parametrize("sample", [None, 1])
def test_shard_objectives_add_up_to_the_whole_batch(sample):
    """The per-rank losses of DDP: sum over shards == the one-process batch objective."""
    rng = np.random.default_rng(0)
    n, k = 13, 3
    idx = np.stack([rng.choice(np.delete(np.arange(n), i), k, replace=False) for i in range(n)])
    w = rng.uniform(0.1, 1, (n, k)).astype(np.float32)
    g = KNNGraph(idx, w / w.sum(1, keepdims=True), np.ones((n, k), np.float32))
    X = torch.from_numpy(rng.normal(size=(n, 4)).astype(np.float32))
    model = build_gmvae(4, 3, GaussianLikelihood(), 2, (8,), generator=torch.Generator().manual_seed(0))
    objective = DGGObjective(model.likelihood, 0.5)
    log_pi = torch.full((n, 3), 1 / 3).log()

    def obj_sum(batch, noise):
        t = model.node_terms(batch.x, noise=noise)
        return objective(batch.x, t.recon, t.latent_term, t.gamma, log_pi[batch.node_ids],
                         batch.edge_index, batch.edge_weight, n_targets=batch.n_anchors).sum()

    make = lambda: NeighborBatches(X, g, 7, sample=sample,
                                   generator=torch.Generator().manual_seed(1))
    noise_gen = torch.Generator().manual_seed(2)
    shards = [list(make().shards(r, 3)) for r in range(3)]  # 7 = 2 + 2 + 3 anchors
    for batch, *parts in zip(make(), *shards, strict=True):
        eps = torch.randn((batch.x.shape[0], 2), generator=noise_gen)
        whole = obj_sum(batch, eps)
        split = sum(obj_sum(p.batch, eps[p.global_rows]) for p in parts)
        torch.testing.assert_close(split, whole, rtol=1e-5, atol=1e-4)


def test_node_terms_checks_the_noise_shape():
    model = build_gmvae(4, 3, GaussianLikelihood(), 2, (8,), generator=torch.Generator())
    with pytest.raises(GraphclustError, match="noise has shape"):
        model.node_terms(torch.zeros(5, 4), noise=torch.zeros(5, 3))


# --------------------------------------------------------------------------- 2 processes
@needs_gloo
def test_two_gloo_processes_match_one_only_rank0_writes_and_resume(tmp_path):
    path, X = blobs(tmp_path)
    single, dist_run = tmp_path / "single", tmp_path / "dist"
    assert main(["train", str(path), "-o", str(single), "--epochs", "2", *TINY]) == 0

    # 1 epoch on 2 processes (through a worker that records who writes), then resume to 2
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    def worker_done() -> bool:
        return all((tmp_path / f"writes{r}.json").is_file()
                   and (tmp_path / f"siamese{r}.npy").is_file() for r in (0, 1))

    torchrun(str(worker), str(tmp_path), "train", str(path), "-o", str(dist_run), "--epochs", "1",
             *TINY, finished=worker_done)
    w0, w1 = (json.loads((tmp_path / f"writes{r}.json").read_text()) for r in (0, 1))
    assert w0["rc"] == w1["rc"] == 0
    assert w1["writes"] == []  # rank 1 neither created a folder nor wrote a file
    written = {Path(p).name for p in w0["writes"]}
    assert {"checkpoint.pt", "labels.npy", "metrics.json", "log.jsonl", "ae.safetensors"} <= written
    config = json.loads((dist_run / "config.json").read_text())
    assert config["distributed"] == {"world_size": 2, "backend": "gloo"}

    def resumed_done() -> bool:
        m = dist_run / "metrics.json"
        return m.is_file() and json.loads(m.read_text()).get("epochs") == 2

    proc, aborted = torchrun("-m", "graphclust", "train", str(path), "-o", str(dist_run),
                             "--epochs", "2", "--resume", *TINY, finished=resumed_done)
    assert aborted or "error" not in proc.stderr.lower()
    metrics = json.loads((dist_run / "metrics.json").read_text())
    assert metrics["resumed"] and metrics["world_size"] == 2 and metrics["epochs"] == 2
    assert metrics["stage_times"]["pretrain_ae"]["cached"]

    # the same result as one process, up to floating-point summation order
    np.testing.assert_array_equal(np.load(dist_run / "labels.npy"), np.load(single / "labels.npy"))
    np.testing.assert_allclose(losses(dist_run), losses(single), rtol=1e-5)
    a, _ = load_weights(single / "checkpoints" / "model.safetensors")
    b, _ = load_weights(dist_run / "checkpoints" / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-5, msg=key)

    # Siamese: both ranks end with the same network, equal to one process's
    from siamese import SiameseEmbedder

    Z1 = SiameseEmbedder(hidden=(16,), n_epochs=2, batch_size=25, random_state=0,
                         verbose=False, device="cpu").fit_transform(X)
    Z0, Zr1 = np.load(tmp_path / "siamese0.npy"), np.load(tmp_path / "siamese1.npy")
    np.testing.assert_array_equal(Z0, Zr1)
    np.testing.assert_allclose(Z0, Z1, rtol=1e-4, atol=1e-4)  # drift ~2e-5

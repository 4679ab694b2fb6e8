"""Benchmark: one DGG epoch with 1 vs 2 (or more) data-parallel gloo processes on the CPU.

The kNN graph (raw pixels, ``--n-neighbors``, self-tuning Gaussian kernel) is built once in
this process; then, for every process count W in ``--worlds``, W fresh processes
(``torch.multiprocessing.spawn``) each load the rows and the graph, build the same randomly
initialised GMVAE (MNIST architecture, no pretraining: the cost of an epoch does not depend
on the weights) and run ``--epochs`` DGG epochs with ``train_dgg``: W = 1 is the plain
one-process loop, W >= 2 the DistributedDataParallel loop over gloo with
``batch_size / W`` anchors per rank and step. Every process uses ``cpu_count / W`` torch
threads, so W processes share the same cores one process would use. Reported per W: the
training and evaluation seconds of each epoch (the first includes warm-up; the speed-up uses
the last), the loss (equal across W up to summation order) and each rank's peak RSS. Expect
little speed-up on 2 cores: one process already uses both through its BLAS threads, and
DDP adds a gradient all-reduce (about 3.5 M parameters) per step.

Usage::

    python scripts/bench_distributed.py                             # 10,000 MNIST rows, W = 1, 2
    python scripts/bench_distributed.py --max-samples 1000 --epochs 1 --hidden 64   # smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench_common import command_line, write_result  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _vm_hwm_mb() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**10
    except OSError:
        pass
    return None


def _worker(rank: int, world: int, port: int, folder: str, cfg: dict) -> None:
    """One process of a W-process run; rank 0 writes ``result_W.json``, every rank its RSS."""
    import torch

    from graphclust.distributed import init_distributed, shutdown
    from graphclust.graph.graph import KNNGraph
    from graphclust.models.mixture import build_gmvae
    from graphclust.models.training import TrainConfig, train_dgg
    from graphclust.nn.likelihood import get_likelihood

    torch.set_num_threads(cfg["threads"])
    ctx = None
    if world > 1:
        os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
                           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
        ctx = init_distributed("cpu")
    try:
        X = np.load(Path(folder) / "X.npy")
        graph = KNNGraph.load(Path(folder) / "graph.npz")
        likelihood = get_likelihood("auto", X)
        model = build_gmvae(X.shape[1], cfg["n_clusters"], likelihood, 10, cfg["hidden"], "head",
                            generator=torch.Generator().manual_seed(0))
        config = TrainConfig(n_epochs=cfg["epochs"], batch_size=cfg["batch_size"],
                             neighbor_sample=cfg["neighbor_sample"])
        t0 = time.perf_counter()
        result = train_dgg(
            model, torch.from_numpy(X), graph, config,
            batch_generator=torch.Generator().manual_seed(1),
            noise_generator=torch.Generator().manual_seed(2), dist=ctx,
        )
        wall = time.perf_counter() - t0
        rss = _vm_hwm_mb()
        (Path(folder) / f"rss_{world}_{rank}.json").write_text(json.dumps(rss))
        if rank == 0:
            record = {
                "world_size": world,
                "threads_per_process": cfg["threads"],
                "wall_s": wall,
                "epoch_s": [r["time_s"] for r in result.history],
                "train_s": [r["train_time_s"] for r in result.history],
                "loss": [r["loss"] for r in result.history],
            }
            (Path(folder) / f"result_{world}.json").write_text(json.dumps(record))
    finally:
        shutdown(ctx)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", default="/work/shared/data")
    ap.add_argument("--max-samples", type=int, default=10_000, help="first N MNIST rows (default 10000)")
    ap.add_argument("--worlds", default="1,2", help="process counts to compare (default 1,2)")
    ap.add_argument("--epochs", type=int, default=2,
                    help="DGG epochs per run; the last one is timed (default 2)")
    ap.add_argument("--batch-size", type=int, default=256, help="global anchors per step (default 256)")
    ap.add_argument("--neighbor-sample", type=int, default=1)
    ap.add_argument("--n-neighbors", type=int, default=20)
    ap.add_argument("--hidden", default="500,500,2000")
    ap.add_argument("--out", default="results", help="folder of the JSON result")
    args = ap.parse_args(argv)

    import torch.distributed as tdist
    import torch.multiprocessing as mp

    from graphclust.data.loaders import load_dataset
    from graphclust.graph.graph import build_knn_graph

    worlds = [int(w) for w in args.worlds.split(",") if w.strip()]
    if any(w > 1 for w in worlds) and not (tdist.is_available() and tdist.is_gloo_available()):
        print("bench_distributed: this torch build has no gloo backend", file=sys.stderr)
        return 2
    t_start = time.perf_counter()
    data = load_dataset("mnist", data_dir=args.data_dir, max_samples=args.max_samples)
    X = np.ascontiguousarray(data.X, dtype=np.float32)
    cores = os.cpu_count() or 1
    results: dict[str, dict] = {}
    peak = 0.0
    with tempfile.TemporaryDirectory(prefix="bench_distributed_") as folder:
        t0 = time.perf_counter()
        graph = build_knn_graph(X, args.n_neighbors, kernel="gaussian", method="exact", device="cpu")
        graph_s = time.perf_counter() - t0
        np.save(Path(folder) / "X.npy", X)
        graph.save(Path(folder) / "graph.npz")
        for world in worlds:
            cfg = {
                "threads": max(1, cores // world), "epochs": args.epochs,
                "batch_size": args.batch_size, "neighbor_sample": args.neighbor_sample,
                "hidden": [int(h) for h in args.hidden.split(",")],
                "n_clusters": int(np.unique(data.y).size),
            }
            print(f"[bench_distributed] {world} process(es), {cfg['threads']} thread(s) each ...",
                  flush=True)
            mp.spawn(_worker, args=(world, _free_port(), folder, cfg), nprocs=world, join=True)
            rec = json.loads((Path(folder) / f"result_{world}.json").read_text())
            rss = [json.loads((Path(folder) / f"rss_{world}_{r}.json").read_text())
                   for r in range(world)]
            rec["peak_rss_mb_per_rank"] = rss
            peak = max([peak, *[r for r in rss if r is not None]])
            results[str(world)] = rec
            print(f"  epoch seconds {[round(s, 2) for s in rec['epoch_s']]}, "
                  f"loss {[round(v, 4) for v in rec['loss']]}", flush=True)

    base = results[str(worlds[0])]["epoch_s"][-1]
    metrics = {
        "n_samples": int(X.shape[0]),
        "cores": cores,
        "epochs_per_run": args.epochs,
        "batch_size": args.batch_size,
        "neighbor_sample": args.neighbor_sample,
        "graph_build_s": graph_s,
        "runs": results,
        "last_epoch_s": {w: r["epoch_s"][-1] for w, r in results.items()},
        f"speedup_vs_{worlds[0]}": {w: base / r["epoch_s"][-1] for w, r in results.items()},
        "max_loss_rel_diff": max(
            abs(a - b) / abs(b)
            for r in results.values()
            for a, b in zip(r["loss"], results[str(worlds[0])]["loss"])
        ),
    }
    path = write_result(
        args.out, benchmark="distributed_scaling", dataset=data.name, model="dgg",
        metrics=metrics, wall_s=time.perf_counter() - t_start, peak_rss_mb=peak,
        command=command_line(), tag=f"n{X.shape[0]}",
    )
    for w, s in metrics["last_epoch_s"].items():
        print(f"W={w}: last epoch {s:.2f} s, speed-up {metrics[f'speedup_vs_{worlds[0]}'][w]:.2f}x")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

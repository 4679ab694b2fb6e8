"""Benchmark: kNN graph of N x 128 float32 points (N up to 1M) in bounded memory.

For every ``--n`` the data are generated on disk once (a seeded Gaussian mixture on a
16-D latent space lifted to 128-D, :func:`graphclust.data.ondisk.write_mixture_npy`,
written in blocks) and reused afterwards. The graph is then built in a fresh
subprocess (this script with ``--single``), so that its peak RSS is its own, with
:func:`graphclust.graph.large.build_knn_graph_chunked` reading the ``.npy``
memory-mapped and writing a graph folder.

Reported per N: time per stage (sample, train, add, search, weights) and in all,
recall@k on ``--n-queries`` random rows against exact brute force over the full
data (chunked float64-accumulated GEMM), peak RSS of the build (``peak_rss_mb``:
VmHWM at the end of the build; ``rss_before_mb``: after imports), the size of
the output, and the memory model's prediction. One JSON per N goes to ``--out``.

Usage::

    python scripts/bench_large_graph.py                              # 1M x 128, k = 20
    python scripts/bench_large_graph.py --n 100000 300000 1000000    # peak RSS vs N
    python scripts/bench_large_graph.py --n 1000000 --index ivfpq
    python scripts/bench_large_graph.py --n 1000000 --shard-size 250000
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench_common import command_line, peak_rss_mb, write_result

DEFAULT_WORKDIR = Path.home() / ".cache" / "graphclust" / "bench_large"


def data_path(workdir: Path, n: int, d: int, seed: int) -> Path:
    return workdir / f"mixture_n{n}_d{d}_s{seed}.npy"


def ensure_data(workdir: Path, n: int, d: int, seed: int) -> Path:
    """The on-disk data set for ``n`` (generated on first use, then reused)."""
    from graphclust.data.ondisk import write_mixture_npy

    path = data_path(workdir, n, d, seed)
    if path.is_file():
        arr = np.load(path, mmap_mode="r")
        if arr.shape == (n, d) and arr.dtype == np.float32:
            return path
    workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    write_mixture_npy(path, n, d, random_state=seed, force=True)
    print(f"generated {path} ({n} x {d}) in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    return path


def exact_neighbors(X: np.ndarray, queries: np.ndarray, k: int, chunk: int = 8192) -> np.ndarray:
    """Exact ``k`` nearest ids of rows ``queries`` of ``X`` (self excluded), ``(n_q, k)``.

    Data are read ``chunk`` rows at a time from the memmap; squared distances by a
    float64 GEMM, a running top-k merged per chunk.
    """
    Q = np.asarray(X[queries], dtype=np.float64)
    qn = (Q**2).sum(1)[:, None]
    best_d = np.full((len(queries), k), np.inf)
    best_i = np.full((len(queries), k), -1, dtype=np.int64)
    for s in range(0, X.shape[0], chunk):
        C = np.asarray(X[s : s + chunk], dtype=np.float64)
        d2 = qn + (C**2).sum(1)[None, :] - 2.0 * (Q @ C.T)
        ids = np.arange(s, s + len(C))
        d2[queries[:, None] == ids[None, :]] = np.inf  # self excluded by id
        top = np.argpartition(d2, k - 1, axis=1)[:, :k] if d2.shape[1] > k else np.argsort(d2, 1)
        cand_d = np.concatenate([best_d, np.take_along_axis(d2, top, 1)], 1)
        cand_i = np.concatenate([best_i, ids[top]], 1)
        order = np.argsort(cand_d, axis=1, kind="stable")[:, :k]
        best_d, best_i = np.take_along_axis(cand_d, order, 1), np.take_along_axis(cand_i, order, 1)
    return best_i


def predicted_rss_mb(n: int, d: int, k: int, meta: dict, pq: bool) -> dict[str, float]:
    """The memory model's terms in MiB (see graphclust.graph.large)."""
    info = meta["index"]
    shard = info["shard_size"]
    per_vec = (info["pq_m"] + 8) if pq else (4 * d + 8)
    index = shard * per_vec + info["nlist"] * d * 4
    train = info["train_size"] * d * 4 + info["nlist"] * d * 4
    chunk = info["chunk_size"] * (2 * 4 * d + (k + 1) * 12 * 3 + info["nprobe"] * 12)
    mib = 2**20
    return {"index_mb": index / mib, "train_mb": train / mib, "chunk_mb": chunk / mib,
            "model_total_mb": (max(index, train) + chunk) / mib}


def run_single(args: argparse.Namespace) -> None:
    """Build one graph (in this process) and write its result file."""
    from graphclust.graph.large import build_knn_graph_chunked

    n, d, k = args.n[0], args.dim, args.k
    path = data_path(Path(args.workdir), n, d, args.seed)
    X = np.load(path, mmap_mode="r")
    rss_before = peak_rss_mb()
    out = Path(args.workdir) / f"graph_n{n}_{args.index}"
    t0, c0 = time.perf_counter(), time.process_time()
    graph = build_knn_graph_chunked(
        X, k, out, index=args.index, nlist=args.nlist, nprobe=args.nprobe, pq_m=args.pq_m,
        train_size=args.train_size, chunk_size=args.chunk_size, shard_size=args.shard_size,
        n_threads=args.threads, force=True, progress=args.progress, random_state=args.seed,
        device=args.device,
    )
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    rss_build = peak_rss_mb()

    t0 = time.perf_counter()
    rng = np.random.default_rng(args.seed + 1)
    queries = np.sort(rng.choice(n, size=min(args.n_queries, n), replace=False))
    truth = exact_neighbors(X, queries, k)
    found = np.asarray(graph.indices[queries])
    recall = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(found, truth)]))
    recall_s = time.perf_counter() - t0
    meta = graph.meta
    out_mb = sum(f.stat().st_size for f in out.iterdir()) / 2**20
    metrics = {
        "n": n, "dim": d, "k": k, f"recall@{k}": recall, "recall_queries": len(queries),
        "seconds": meta["seconds"], "build_s": wall, "build_cpu_s": cpu, "recall_s": recall_s,
        "rss_before_mb": rss_before, "peak_rss_build_mb": rss_build, "output_mb": out_mb,
        "index": meta["index"],
        **predicted_rss_mb(n, d, k, meta, args.index == "ivfpq"),
    }
    res = write_result(
        args.out, benchmark="large_graph", dataset=f"mixture{n}x{d}", model=f"chunked-{args.index}",
        metrics=metrics, wall_s=wall, peak_rss_mb=rss_build, command=args.command or command_line(),
    )
    if not args.keep_graph:
        import shutil

        del graph
        shutil.rmtree(out, ignore_errors=True)
    print(json.dumps({"result": str(res), **metrics}))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, nargs="+", default=[1_000_000], help="sizes to run (default 1M)")
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--k", type=int, default=20)
    p.add_argument("--index", choices=("ivf", "ivfpq"), default="ivf")
    p.add_argument("--nlist", type=int, default=None, help="default 4 * sqrt(n)")
    p.add_argument("--nprobe", type=int, default=None, help="default: the library default")
    p.add_argument("--pq-m", type=int, default=None)
    p.add_argument("--train-size", type=int, default=None)
    p.add_argument("--chunk-size", type=int, default=16384)
    p.add_argument("--shard-size", type=int, default=None, help="rows per index shard")
    p.add_argument("--threads", type=int, default=None, help="faiss/torch threads")
    p.add_argument("--device", default="cpu")
    p.add_argument("--n-queries", type=int, default=1000, help="rows for recall (default 1000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", default=str(DEFAULT_WORKDIR), help="data and graph folder")
    p.add_argument("--out", default="results", help="folder of the JSON results (default results/)")
    p.add_argument("--keep-graph", action="store_true", help="keep the graph folder")
    p.add_argument("--progress", action="store_true")
    p.add_argument("--single", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--command", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.nprobe is None:
        import inspect

        from graphclust.graph.large import build_knn_graph_chunked

        args.nprobe = inspect.signature(build_knn_graph_chunked).parameters["nprobe"].default
    if args.single:
        run_single(args)
        return 0
    for n in args.n:
        ensure_data(Path(args.workdir), n, args.dim, args.seed)
    me = command_line()
    for n in args.n:
        child = [sys.executable, __file__, "--single", "--command", me, "--n", str(n)]
        for name in ("dim", "k", "index", "nlist", "nprobe", "pq_m", "train_size", "chunk_size",
                     "shard_size", "threads", "device", "n_queries", "seed", "workdir", "out"):
            val = getattr(args, name)
            if val is not None:
                child += [f"--{name.replace('_', '-')}", str(val)]
        child += ["--keep-graph"] * args.keep_graph + ["--progress"] * args.progress
        proc = subprocess.run(child, capture_output=True, text=True)
        if proc.returncode:
            sys.stderr.write(proc.stderr)
            return proc.returncode
        rec = json.loads(proc.stdout.strip().splitlines()[-1])
        sec = rec["seconds"]
        print(
            f"n={n:>8}  recall@{args.k}={rec[f'recall@{args.k}']:.4f}  build {rec['build_s']:.1f}s "
            f"(CPU {rec['build_cpu_s']:.1f}s) "
            f"(" + ", ".join(f"{s} {v:.1f}" for s, v in sec.items()) + ")  "
            f"peak RSS {rec['peak_rss_build_mb']:.0f} MiB (after imports {rec['rss_before_mb']:.0f}, "
            f"model {rec['model_total_mb']:.0f} + imports)  output {rec['output_mb']:.0f} MiB  "
            f"-> {rec['result']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

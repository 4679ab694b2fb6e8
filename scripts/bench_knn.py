"""Benchmark: all-pairs kNN on MNIST, our exact and approximate searches against the field.

For every ``k`` the methods run side by side, each in a fresh subprocess (this script
with ``--single``) so that its peak RSS is its own:

==================  ==============================================================
``exact``           ``knn_search(method="exact")``: symmetric blocked GEMM (ours)
``approx``          ``knn_search(method="approx")``: PCA candidates + re-rank (ours)
``faiss-flat``      faiss ``IndexFlatL2`` called directly (k + 1, self dropped)
``faiss-hnsw``      faiss ``IndexHNSWFlat`` called directly, several efSearch values
``sklearn-brute``   scikit-learn ``NearestNeighbors(algorithm="brute")``
``pynndescent``     ``pynndescent.NNDescent`` (numba JIT warmed up on a subset first)
``hnswlib``         ``hnswlib.Index``, several ef values
``gemm``            the blocked float32 GEMM ``X @ X.T`` alone: the floor
==================  ==============================================================

Reported per method: wall time (build + search), recall@k against ``exact``, peak RSS
(MiB, of the whole subprocess: data loading and imports included; ``rss_before_mb`` in
the metrics is the peak before the method started) and the ratio of the wall time to
faiss flat. One JSON per (method, k) goes to ``--out``; a Markdown table is printed.

Usage::

    python scripts/bench_knn.py                          # MNIST 70k, k = 10 and 100
    python scripts/bench_knn.py --subsample 10000        # quick check
    python scripts/bench_knn.py --methods exact faiss-flat --k 10
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench_common import command_line, peak_rss_mb, write_result

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist.npz"
METHODS = (
    "exact", "approx", "faiss-flat", "faiss-hnsw", "sklearn-brute", "pynndescent", "hnswlib", "gemm",
)
REFERENCE = "exact"


# --------------------------------------------------------------------------- data
def load_data(path: str | Path, subsample: int | None) -> np.ndarray:
    """``X`` of an .npz as C-contiguous float32; integer pixels are scaled by 1/255."""
    with np.load(path) as data:
        if "X" not in data:
            raise SystemExit(f"{path} has no array 'X' (found {list(data.keys())})")
        X = data["X"]
    if subsample is not None:
        if subsample < 2:
            raise SystemExit("--subsample must be at least 2")
        X = X[:subsample]
    X = X.reshape(len(X), -1)
    if np.issubdtype(X.dtype, np.integer):
        return np.ascontiguousarray(X, dtype=np.float32) / np.float32(255.0)
    return np.ascontiguousarray(X, dtype=np.float32)


def drop_self(indices: np.ndarray, k: int) -> np.ndarray:
    """``(n, k)`` from ``(n, k + 1)`` results: drop self by index, else the last column."""
    n = indices.shape[0]
    is_self = indices == np.arange(n)[:, None]
    is_self[~is_self.any(axis=1), -1] = True
    return indices[~is_self].reshape(n, k)


def ef_values(k: int, given: list[int] | None) -> list[int]:
    """efSearch / ef settings for the HNSW methods (each at least k + 1)."""
    values = given or [max(16, k + 1), max(32, 2 * k), max(64, 4 * k)]
    return sorted({max(v, k + 1) for v in values})


# --------------------------------------------------------------------------- one method
def run_single(method: str, X: np.ndarray, k: int, args) -> list[dict]:
    """Run one method; return one record per setting (``name``, ``wall_s``, ``indices``...)."""
    n, d = X.shape
    if method in ("exact", "approx"):
        from graphclust.graph.knn import knn_search

        t0 = time.perf_counter()
        res = knn_search(X, k, method=method)
        return [{"name": method, "wall_s": time.perf_counter() - t0, "indices": res.indices}]

    if method == "faiss-flat":
        import faiss

        t0 = time.perf_counter()
        index = faiss.IndexFlatL2(d)
        index.add(X)
        _, idx = index.search(X, k + 1)
        wall = time.perf_counter() - t0
        return [{"name": method, "wall_s": wall, "indices": drop_self(idx, k)}]

    if method == "faiss-hnsw":
        import faiss

        t0 = time.perf_counter()
        index = faiss.IndexHNSWFlat(d, args.hnsw_m)
        index.hnsw.efConstruction = args.hnsw_efc
        index.add(X)
        build = time.perf_counter() - t0
        out = []
        for ef in ef_values(k, args.hnsw_ef):
            index.hnsw.efSearch = ef
            t0 = time.perf_counter()
            _, idx = index.search(X, k + 1)
            search = time.perf_counter() - t0
            out.append({
                "name": f"faiss-hnsw(M={args.hnsw_m},efC={args.hnsw_efc},efS={ef})",
                "wall_s": build + search, "build_s": build, "search_s": search,
                "indices": drop_self(idx, k),
            })
        return out

    if method == "hnswlib":
        import hnswlib

        t0 = time.perf_counter()
        index = hnswlib.Index(space="l2", dim=d)
        index.init_index(max_elements=n, ef_construction=args.hnswlib_efc, M=args.hnswlib_m,
                         random_seed=0)
        index.add_items(X, np.arange(n), num_threads=-1)
        build = time.perf_counter() - t0
        out = []
        for ef in ef_values(k, args.hnsw_ef):
            index.set_ef(ef)
            t0 = time.perf_counter()
            idx, _ = index.knn_query(X, k=k + 1, num_threads=-1)
            search = time.perf_counter() - t0
            out.append({
                "name": f"hnswlib(M={args.hnswlib_m},efC={args.hnswlib_efc},ef={ef})",
                "wall_s": build + search, "build_s": build, "search_s": search,
                "indices": drop_self(idx.astype(np.int64), k),
            })
        return out

    if method == "sklearn-brute":
        from sklearn.neighbors import NearestNeighbors

        t0 = time.perf_counter()
        nn = NearestNeighbors(n_neighbors=k + 1, algorithm="brute", n_jobs=-1).fit(X)
        idx = nn.kneighbors(X, return_distance=False)
        return [{"name": method, "wall_s": time.perf_counter() - t0, "indices": drop_self(idx, k)}]

    if method == "pynndescent":
        import pynndescent

        t0 = time.perf_counter()  # compile numba kernels outside the timed run
        small = X[: min(n, 2000)]
        _ = pynndescent.NNDescent(small, n_neighbors=min(k + 1, len(small) - 1),
                                  random_state=0).neighbor_graph
        warmup = time.perf_counter() - t0
        t0 = time.perf_counter()
        index = pynndescent.NNDescent(X, n_neighbors=k + 1, random_state=0, n_jobs=-1)
        idx, _ = index.neighbor_graph
        wall = time.perf_counter() - t0
        return [{"name": method, "wall_s": wall, "jit_warmup_s": warmup,
                 "indices": drop_self(idx.astype(np.int64), k)}]

    if method == "gemm":
        import torch

        Xt = torch.from_numpy(X)
        out = torch.empty(min(n, args.gemm_block), n)
        t0 = time.perf_counter()
        for s in range(0, n, args.gemm_block):
            e = min(n, s + args.gemm_block)
            torch.mm(Xt[s:e], Xt.T, out=out[: e - s])
        wall = time.perf_counter() - t0
        return [{"name": "gemm X@X.T (float32, full)", "wall_s": wall, "indices": None,
                 "half_gemm_s": wall / 2}]

    raise SystemExit(f"unknown method {method!r}; expected one of {METHODS}")


def child_main(args) -> int:
    """``--single METHOD``: run it once per k, save records (JSON) and indices (.npy)."""
    X = load_data(args.data, args.subsample)
    rss_before = peak_rss_mb()
    out_dir = Path(args.child_dir)
    records = []
    for k in args.k:
        for i, rec in enumerate(run_single(args.single, X, k, args)):
            idx = rec.pop("indices")
            if idx is not None:
                np.save(out_dir / f"{args.single}_k{k}_{i}.npy", idx)
                rec["indices_file"] = f"{args.single}_k{k}_{i}.npy"
            rec.update(k=k, rss_before_mb=rss_before)
            records.append(rec)
    for rec in records:
        rec["peak_rss_mb"] = peak_rss_mb()
    (out_dir / f"{args.single}.json").write_text(json.dumps(records))
    return 0


# --------------------------------------------------------------------------- driver
def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of the true ``k`` neighbours that were found."""
    n, k = truth.shape
    hits = 0
    for s in range(0, n, 4096):
        f, t = found[s : s + 4096], truth[s : s + 4096]
        hits += int((f[:, :, None] == t[:, None, :]).any(axis=2).sum())
    return hits / (n * k)


def run_child(method: str, k: int, args, tmp: Path) -> tuple[list[dict], str | None]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--single", method,
           "--child-dir", str(tmp), "--data", str(args.data), "--k", str(k),
           "--hnsw-m", str(args.hnsw_m), "--hnsw-efc", str(args.hnsw_efc),
           "--hnswlib-m", str(args.hnswlib_m), "--hnswlib-efc", str(args.hnswlib_efc),
           "--gemm-block", str(args.gemm_block)]
    if args.subsample:
        cmd += ["--subsample", str(args.subsample)]
    if args.hnsw_ef:
        cmd += ["--hnsw-ef", *map(str, args.hnsw_ef)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout,
                              check=False)
    except subprocess.TimeoutExpired:
        return [], f"{method} ran past --timeout {args.timeout:g} s"
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["(no output)"]
        return [], f"{method} failed: {tail[0]}"
    return json.loads((tmp / f"{method}.json").read_text()), None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(DEFAULT_DATA), help=f"npz with X (default {DEFAULT_DATA})")
    ap.add_argument("--k", type=int, nargs="+", default=[10, 100], help="neighbours (default 10 100)")
    ap.add_argument("--subsample", type=int, default=None, help="use the first N rows")
    ap.add_argument("--out", default="results", help="folder for the JSON results (default results/)")
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS,
                    help="methods to run (default all; exact always runs, it is the reference)")
    ap.add_argument("--hnsw-m", type=int, default=32, help="faiss HNSW M (default 32)")
    ap.add_argument("--hnsw-efc", type=int, default=40, help="faiss HNSW efConstruction (default 40)")
    ap.add_argument("--hnswlib-m", type=int, default=16, help="hnswlib M (default 16)")
    ap.add_argument("--hnswlib-efc", type=int, default=200, help="hnswlib ef_construction (default 200)")
    ap.add_argument("--hnsw-ef", type=int, nargs="+", default=None,
                    help="efSearch values for both HNSWs (default: k+1, 2k, 4k, at least 16/32/64)")
    ap.add_argument("--gemm-block", type=int, default=2048, help="rows per block of the GEMM floor")
    ap.add_argument("--timeout", type=float, default=None, help="seconds per method subprocess")
    ap.add_argument("--single", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--child-dir", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.single:
        return child_main(args)

    if not Path(args.data).is_file():
        raise SystemExit(f"data file {args.data} not found; pass --data PATH.npz")
    X = load_data(args.data, args.subsample)  # validates the file before any subprocess
    n = X.shape[0]
    del X
    bad_k = [k for k in args.k if not 1 <= k < n]
    if bad_k:
        raise SystemExit(f"--k {bad_k} invalid for {n} points: need 1 <= k < n")
    methods = [REFERENCE] + [m for m in args.methods if m != REFERENCE]
    dataset = Path(args.data).stem + (f"[:{args.subsample}]" if args.subsample else "")
    command = command_line(None if argv is None else ["scripts/bench_knn.py", *argv])
    rows, failures = [], []
    for k in args.k:
        with tempfile.TemporaryDirectory(prefix="bench_knn.") as tmp_name:
            tmp = Path(tmp_name)
            results: list[dict] = []
            for method in methods:
                print(f"k={k}: {method} ...", file=sys.stderr, flush=True)
                recs, err = run_child(method, k, args, tmp)
                if err:
                    failures.append(f"k={k}: {err}")
                    print(f"  {err}", file=sys.stderr)
                for rec in recs:
                    rec["method"] = method
                results.extend(recs)
            truth_rec = next((r for r in results if r["method"] == REFERENCE), None)
            if truth_rec is None:
                raise SystemExit(f"the reference method {REFERENCE!r} failed; see above")
            truth = np.load(tmp / truth_rec["indices_file"])
            flat = next((r for r in results if r["method"] == "faiss-flat"), None)
            for rec in results:
                recall = None
                if rec.get("indices_file"):
                    recall = recall_at_k(np.load(tmp / rec["indices_file"]), truth)
                ratio = rec["wall_s"] / flat["wall_s"] if flat else None
                extra = {key: rec[key] for key in ("build_s", "search_s", "jit_warmup_s",
                                                   "half_gemm_s", "rss_before_mb") if key in rec}
                metrics = {"recall": recall, "ratio_to_faiss_flat": ratio, "k": k, "n": n, **extra}
                path = write_result(args.out, benchmark="knn", dataset=dataset, model=rec["name"],
                                    metrics=metrics, wall_s=rec["wall_s"],
                                    peak_rss_mb=rec["peak_rss_mb"], command=command,
                                    tag=f"k{k}")
                rows.append((k, rec["name"], rec["wall_s"], recall, rec["peak_rss_mb"], ratio, path))

    print(f"\n## kNN on {dataset} (n = {n})\n")
    print("| k | method | wall (s) | recall@k | peak RSS (MiB) | / faiss flat |")
    print("|---|---|---|---|---|---|")
    for k, name, wall, recall, rss, ratio, _ in rows:
        rec_s = "–" if recall is None else f"{recall:.4f}"
        ratio_s = "–" if ratio is None else f"{ratio:.3f}"
        print(f"| {k} | {name} | {wall:.2f} | {rec_s} | {rss:.0f} | {ratio_s} |")
    for f in failures:
        print(f"\n- {f}")
    print(f"\n{len(rows)} result files in {args.out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())

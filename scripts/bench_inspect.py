"""Benchmark: time and peak memory of ``graphclust inspect`` on a graph or a run folder.

Runs the real command in a subprocess (so the peak RSS is that of the report alone,
imports included), reads the report's ``summary.json`` for sizes and per-panel times,
and writes one JSON file to ``results/`` with keys ``benchmark``, ``dataset``, ``model``,
``metrics``, ``wall_s``, ``peak_rss_mb``, ``command``, ``versions``, ``machine``, ``date``.

Usage::

    python scripts/bench_inspect.py graphs/mnist.npz --data-dir ../shared/data
    python scripts/bench_inspect.py runs/mnist-dgg --max-nodes 5000
"""

from __future__ import annotations

import argparse
import json
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from graphclust.utils import GraphclustError, machine, versions, write_json


def _dir_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file()) / 2**20


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("path", help="graph .npz or run folder")
    ap.add_argument("--data", default=None, help="passed to graphclust inspect --data")
    ap.add_argument("--data-dir", default=None, help="passed to graphclust inspect --data-dir")
    ap.add_argument("--max-nodes", type=int, default=5000, help="passed on (default 5000)")
    ap.add_argument("--map", choices=("pca", "umap"), default="pca", help="passed on")
    ap.add_argument("--results-dir", default="results",
                    help="where the JSON goes (default results/)")
    ap.add_argument("--keep-report", default=None,
                    help="also copy the report to this folder (default: it is deleted)")
    args = ap.parse_args(argv)

    results = Path(args.results_dir)
    results.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench_inspect.") as tmp:
        report = Path(tmp) / "report"
        cmd = [sys.executable, "-m", "graphclust", "inspect", args.path, "-o", str(report), "-q",
               "--max-nodes", str(args.max_nodes), "--map", args.map]
        if args.data:
            cmd += ["--data", args.data]
        if args.data_dir:
            cmd += ["--data-dir", args.data_dir]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr)
            raise SystemExit(f"graphclust inspect failed with exit code {proc.returncode}")
        # ru_maxrss of waited-for children: kilobytes on Linux
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        summary = json.loads((report / "summary.json").read_text())
        info = summary["input"]
        metrics = {
            "n_nodes": info["n_nodes"],
            "n_edges": info["n_edges"],
            "n_clusters": info["n_clusters"],
            "kind": info["kind"],
            "has_data": info["has_data"],
            "max_nodes": args.max_nodes,
            "map": args.map,
            "report_mb": round(_dir_mb(report), 3),
            "html_mb": round((report / "index.html").stat().st_size / 2**20, 3),
            "n_figures": len([f for f in summary["files"] if f.endswith(".png")]),
            "report_s": summary["seconds"]["total"],
            "panel_s": {k: v for k, v in summary["seconds"].items() if k != "total"},
        }
        if args.keep_report:
            import shutil

            shutil.copytree(report, args.keep_report)

    dataset = str(info["data"])
    model = info.get("model") or info["kind"]
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = results / f"inspect_{dataset}_{model}_{stamp}.json"
    write_json(out, {
        "benchmark": "inspect",
        "dataset": dataset,
        "model": model,
        "metrics": metrics,
        "wall_s": wall,
        "peak_rss_mb": peak_mb,
        "command": " ".join(shlex.quote(c) for c in ["graphclust", *cmd[3:]]),
        "versions": versions(),
        "machine": machine(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
    })
    print(f"inspect {dataset} ({model}, n={metrics['n_nodes']}): {wall:.1f} s wall, "
          f"{metrics['report_s']:.1f} s report, peak RSS {peak_mb:.0f} MB -> {out}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except GraphclustError as exc:
        sys.exit(f"bench_inspect: error: {exc}")

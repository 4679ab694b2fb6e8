"""``graphclust build-graph``: data -> (Siamese embedding) -> kNN graph -> affinity -> graph.npz."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from graphclust.utils import GraphclustError, prepare_output, versions, write_json

EMBEDDERS = ("siamese", "none")
METHODS = ("exact", "approx", "faiss-flat", "ivf", "hnsw", "torch")


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "build-graph",
        help="build a kNN neighbour graph for a dataset",
        description=(
            "Embed DATA (optionally with a Siamese contrastive network), build its kNN graph with "
            "faiss and weight the edges with an affinity kernel. DATA is a dataset name "
            "(digits, mnist, 20news, coil20, ...: see `graphclust datasets`) or a .npz/.npy/.csv file."
        ),
    )
    p.add_argument("data", help="dataset name or path to .npz / .npy / .csv")
    p.add_argument("-o", "--output", required=True, help="output graph file (.npz)")
    p.add_argument("--embedder", choices=EMBEDDERS, default="siamese",
                   help="space the graph is built in (default: siamese)")
    p.add_argument("--k", type=int, default=20, help="neighbours per node, self excluded (default 20)")
    p.add_argument("--kernel", choices=("gaussian", "uniform", "heat"), default="gaussian",
                   help="affinity kernel (default: self-tuning gaussian)")
    p.add_argument("--no-normalize", action="store_true", help="keep raw kernel weights (no row normalisation)")
    p.add_argument("--method", choices=METHODS, default="exact", help="kNN search method (default exact)")
    p.add_argument("--siamese-epochs", type=int, default=10, help="Siamese training epochs (default 10)")
    p.add_argument("--siamese-neighbors", type=int, default=10,
                   help="input-space neighbours used as Siamese positives (default 10)")
    p.add_argument("--labels", default=None, help="optional labels file (.npy/.txt) for purity reports")
    p.add_argument("--data-dir", default=None,
                   help="folder with benchmark files (default: $GRAPHCLUST_DATA_DIR or ~/.cache/graphclust)")
    p.add_argument("--download", action="store_true", help="download a named dataset when missing")
    p.add_argument("--max-samples", type=int, default=None, help="use only the first N rows")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--force", action="store_true", help="overwrite existing outputs")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    return p


def _config_path(out: Path) -> Path:
    return out.with_name(out.stem + ".config.json")


def _embedder_path(out: Path) -> Path:
    return out.with_name(out.stem + ".siamese.safetensors")


def run(args: argparse.Namespace) -> int:
    from graphclust.data.loaders import load_dataset
    from graphclust.graph.graph import build_knn_graph, data_fingerprint
    from graphclust.graph.knn import check_k
    from graphclust.metrics import purity_curve

    out = Path(args.output)
    if out.suffix != ".npz":
        raise GraphclustError(f"the output graph file must end in .npz, got {out.name!r}")
    outputs = [out, _config_path(out)] + ([_embedder_path(out)] if args.embedder == "siamese" else [])
    for path in outputs:
        prepare_output(path, force=args.force)
    verbose = not args.quiet
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    data = load_dataset(
        args.data, data_dir=args.data_dir, labels=args.labels, download=args.download,
        max_samples=args.max_samples,
    )
    timings["load"] = time.perf_counter() - t0
    X, y = data.X, data.y
    check_k(args.k, X.shape[0])
    _log(verbose, f"loaded {data.name}: {X.shape[0]} x {X.shape[1]}"
         + (f", {data.n_classes} classes" if y is not None else ""))

    embedder = None
    space = X
    if args.embedder == "siamese":
        from siamese import KNNPairMiner, SiameseEmbedder

        t0 = time.perf_counter()
        embedder = SiameseEmbedder(
            miner=KNNPairMiner(n_neighbors=min(args.siamese_neighbors, X.shape[0] - 1)),
            n_epochs=args.siamese_epochs, device=args.device, random_state=args.seed,
            verbose=verbose,
        )
        space = embedder.fit_transform(X)
        timings["siamese"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    graph = build_knn_graph(
        space, k=args.k, kernel=args.kernel, normalize=not args.no_normalize,
        method=args.method, device=args.device, labels=y, progress=verbose,
        meta={
            "data_fingerprint": data_fingerprint(X),
            "data": data.name,
            "embedder": args.embedder,
        },
    )
    timings["knn+kernel"] = time.perf_counter() - t0

    summary: dict[str, Any] = {"n_nodes": graph.n_nodes, "k": graph.k, "seconds": timings}
    if y is not None:
        summary["purity"] = purity_curve(graph.indices, y)
    graph.meta["summary"] = summary

    config = {
        "command": "graphclust build-graph",
        "argv": sys.argv[1:],
        "args": {k: v for k, v in vars(args).items() if not k.startswith("_")},
        "data": {"name": data.name, "source": data.source, "shape": list(X.shape)},
        "summary": summary,
        "versions": versions(),
    }
    written: list[Path] = []
    try:
        if embedder is not None:
            embedder.save(_embedder_path(out))
            written.append(_embedder_path(out))
        graph.save(out)
        written.append(out)
        write_json(_config_path(out), config)
    except BaseException:
        for path in written:  # all or nothing
            path.unlink(missing_ok=True)
        raise

    _print_summary(data.name, summary, out)
    return 0


def _log(verbose: bool, msg: str) -> None:
    if verbose:
        print(msg, file=sys.stderr)


def _print_summary(name: str, summary: dict[str, Any], out: Path) -> None:
    lines = [f"graph of {name}: n={summary['n_nodes']}, k={summary['k']} -> {out}"]
    lines.append("time: " + ", ".join(f"{k} {v:.1f}s" for k, v in summary["seconds"].items()))
    if "purity" in summary:
        lines.append(
            "neighbour purity: " + ", ".join(f"@{k} {v:.3f}" for k, v in summary["purity"].items())
        )
    print("\n".join(lines))

"""``graphclust build-graph``: data -> (Siamese embedding) -> kNN graph -> affinity -> graph.npz.

With ``--chunked`` the graph is built by :func:`graphclust.graph.large.build_knn_graph_chunked`
into a graph folder, in memory bounded independently of the data size (a ``.npy``
DATA is memory-mapped, never loaded whole).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from graphclust.utils import GraphclustError, prepare_output, versions, write_json

EMBEDDERS = ("siamese", "none")
METHODS = ("exact", "approx", "faiss-flat", "ivf", "ivfpq", "hnsw", "torch")


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
    p.add_argument("-o", "--output", required=True,
                   help="output graph file (.npz), or graph folder with --chunked")
    p.add_argument("--embedder", choices=EMBEDDERS, default=None,
                   help="space the graph is built in (default: siamese; none with --chunked)")
    p.add_argument("--k", type=int, default=20, help="neighbours per node, self excluded (default 20)")
    p.add_argument("--kernel", choices=("gaussian", "uniform", "heat"), default="gaussian",
                   help="affinity kernel (default: self-tuning gaussian)")
    p.add_argument("--no-normalize", action="store_true", help="keep raw kernel weights (no row normalisation)")
    p.add_argument("--method", choices=METHODS, default="exact", help="kNN search method (default exact)")
    p.add_argument("--siamese-epochs", type=int, default=10, help="Siamese training epochs (default 10)")
    p.add_argument("--siamese-neighbors", type=int, default=10,
                   help="input-space neighbours used as Siamese positives (default 10)")
    p.add_argument("--siamese-mutual", action="store_true",
                   help="only mutual input-space neighbours as Siamese positives (purer pairs)")
    p.add_argument("--siamese-augment", action="store_true",
                   help="augment both arms of every Siamese pair (images: shifts of up to 2 px "
                        "and rotations of up to 10 degrees; other rows: masking and noise)")
    p.add_argument("--labels", default=None, help="optional labels file (.npy/.txt) for purity reports")
    p.add_argument("--data-dir", default=None,
                   help="folder with benchmark files (default: $GRAPHCLUST_DATA_DIR or ~/.cache/graphclust)")
    p.add_argument("--download", action="store_true", help="download a named dataset when missing")
    p.add_argument("--max-samples", type=int, default=None, help="use only the first N rows")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--force", action="store_true", help="overwrite existing outputs")
    big = p.add_argument_group("large graphs (--chunked)")
    big.add_argument("--chunked", action="store_true",
                     help="build chunk by chunk with a faiss IVF index into a graph folder "
                          "(bounded memory; a .npy DATA is memory-mapped)")
    big.add_argument("--index", choices=("ivf", "ivfpq"), default="ivf",
                     help="IVF-Flat (exact distances) or IVF-PQ (compressed) (default ivf)")
    big.add_argument("--chunk-size", type=int, default=16384, help="rows per chunk (default 16384)")
    big.add_argument("--nprobe", type=int, default=16, help="IVF cells visited per query (default 16)")
    big.add_argument("--shard-size", type=int, default=None,
                     help="rows per index shard (bounds the index memory; default: one index)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    return p


def _config_path(out: Path) -> Path:
    return out.with_name(out.stem + ".config.json")


def _embedder_path(out: Path) -> Path:
    return out.with_name(out.stem + ".siamese.safetensors")


def run(args: argparse.Namespace) -> int:
    if args.chunked:
        return run_chunked(args)
    if args.embedder is None:
        args.embedder = "siamese"
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
        from graphclust.data.augment import default_augmenter
        from siamese import KNNPairMiner, SiameseEmbedder

        t0 = time.perf_counter()
        embedder = SiameseEmbedder(
            miner=KNNPairMiner(n_neighbors=min(args.siamese_neighbors, X.shape[0] - 1),
                               mutual=args.siamese_mutual),
            augment=default_augmenter(data.image_shape) if args.siamese_augment else None,
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


def run_chunked(args: argparse.Namespace) -> int:
    """``--chunked``: data (memory-mapped .npy) -> chunked IVF kNN -> graph folder."""
    import shutil

    from graphclust.graph.large import build_knn_graph_chunked

    if args.embedder == "siamese":
        raise GraphclustError(
            "--chunked builds the graph on the data as given; it cannot train a Siamese "
            "embedder (use --embedder none, or embed the data first and pass the embeddings)"
        )
    args.embedder = "none"
    if args.method != "exact":
        raise GraphclustError("--method does not apply with --chunked; choose --index ivf or ivfpq")
    out = Path(args.output)
    if out.suffix == ".npz":
        raise GraphclustError(
            f"--chunked writes a graph folder, not a .npz file; give a folder name, not {out.name!r}"
        )
    prepare_output(out, force=args.force, is_dir=True)
    prepare_output(_config_path(out), force=args.force)
    verbose = not args.quiet

    t0 = time.perf_counter()
    name, source = _open_chunked_source(args)
    X = source.X
    if args.max_samples is not None:
        if args.max_samples < 2:
            raise GraphclustError(f"--max-samples must be >= 2, got {args.max_samples}")
        X = X[: args.max_samples]
    y = source.y
    if y is not None and args.max_samples is not None:
        y = y[: args.max_samples]
    load_s = time.perf_counter() - t0
    _log(verbose, f"opened {name}: {X.shape[0]} x {X.shape[1]}"
         + (" (memory-mapped)" if isinstance(X, np.memmap) else ""))

    graph = build_knn_graph_chunked(
        X, args.k, out, index=args.index, nprobe=args.nprobe, chunk_size=args.chunk_size,
        shard_size=args.shard_size, kernel=args.kernel, normalize=not args.no_normalize,
        labels=y, device=args.device, force=args.force, progress=verbose,
        random_state=args.seed, meta={"data": name, "embedder": "none"},
    )
    seconds = {"load": load_s, **graph.meta["seconds"]}
    summary: dict[str, Any] = {"n_nodes": graph.n_nodes, "k": graph.k, "seconds": seconds}
    config = {
        "command": "graphclust build-graph",
        "argv": sys.argv[1:],
        "args": {k: v for k, v in vars(args).items() if not k.startswith("_")},
        "data": {"name": name, "source": str(args.data), "shape": list(X.shape)},
        "index": graph.meta["index"],
        "summary": summary,
        "versions": versions(),
    }
    try:
        write_json(_config_path(out), config)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)  # all or nothing
        raise
    _print_summary(name, summary, out)
    return 0


class _ChunkedSource(NamedTuple):
    X: Any
    y: np.ndarray | None


def _open_chunked_source(args: argparse.Namespace) -> tuple[str, _ChunkedSource]:
    """A ``.npy`` file memory-mapped, anything else through ``load_dataset`` (in memory)."""
    from graphclust.data.loaders import _read_labels, load_dataset

    path = Path(args.data).expanduser()
    if path.suffix.lower() == ".npy" and path.is_file():
        try:
            X = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise GraphclustError(f"could not open {path} as a .npy array: {exc}") from exc
        y = None if args.labels is None else _read_labels(args.labels)
        return path.stem, _ChunkedSource(X, y)
    data = load_dataset(
        args.data, data_dir=args.data_dir, labels=args.labels, download=args.download,
        max_samples=args.max_samples,
    )
    return data.name, _ChunkedSource(data.X, data.y)


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

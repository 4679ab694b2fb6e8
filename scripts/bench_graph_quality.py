"""Benchmark: neighbour-graph quality on MNIST, raw pixels vs the Siamese embeddings, and memory.

For each space the script builds the exact kNN graph (k = 100, our symmetric exact path),
reports neighbour label purity at k = 10 / 20 / 100, the time of each stage and the
Siamese training time. Spaces (``--spaces``): ``raw`` pixels; ``siamese``, trained on the
10 nearest raw neighbours as positives (the DGG recipe); ``siamese-mutual``, trained on the
mutual ones only (``KNNPairMiner(mutual=True)``); ``siamese-augment``, the mutual ones with
both arms of every pair augmented (``default_augmenter``: for images, shifts of up to 2 px and
rotations of up to 10 degrees). The raw row also gives the label purity of
the positive pairs each miner draws from. On MNIST (70,000 rows, the standard 60k/10k split)
each space also reports the test accuracy of a 5-NN classifier fitted on the training rows'
labels: a supervised ceiling for any clustering of that space. A second part runs
``graphclust build-graph`` with k = 100 in a subprocess and records its peak RSS (building
and holding the graph).

Writes one JSON file per space under ``results/`` and prints a Markdown table.

Usage::

    python scripts/bench_graph_quality.py --data ../shared/data/mnist.npz
    python scripts/bench_graph_quality.py --subsample 10000 --siamese-epochs 2   # quick check
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench_common import command_line, peak_rss_mb, write_result

from graphclust.data.loaders import load_dataset
from graphclust.graph.knn import knn_search
from graphclust.metrics import purity_curve
from siamese.pairs import mutual_neighbors

KS = (10, 20, 100)
SPACES = ("raw", "siamese", "siamese-mutual", "siamese-augment")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="mnist", help="dataset name or file (default mnist)")
    ap.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[1].parent / "shared/data"))
    ap.add_argument("--subsample", type=int, default=None, help="use the first N rows")
    ap.add_argument("--siamese-epochs", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="results")
    ap.add_argument("--skip-memory", action="store_true", help="skip the build-graph RSS run")
    ap.add_argument("--spaces", default=",".join(SPACES),
                    help=f"comma-separated subset of {','.join(SPACES)} (default all)")
    args = ap.parse_args(argv)
    spaces = [t for t in args.spaces.split(",") if t]
    unknown = sorted(set(spaces) - set(SPACES))
    if unknown or not spaces:
        ap.error(f"--spaces takes a subset of {SPACES}, got {args.spaces!r}")

    from graphclust.data.augment import default_augmenter
    from siamese import KNNPairMiner, SiameseEmbedder

    t0 = time.perf_counter()
    data = load_dataset(args.data, data_dir=args.data_dir, max_samples=args.subsample)
    X, y, name = data.X, data.y, data.name
    load_s = time.perf_counter() - t0
    command = command_line()
    rows = []

    # raw pixels (always searched: the Siamese positives come from it, no second search)
    t0 = time.perf_counter()
    knn = knn_search(X, max(KS), method="exact", progress=True)
    raw_s = time.perf_counter() - t0
    if "raw" in spaces:
        rows.append(("raw", purity_curve(knn.indices, y, KS),
                     {"knn_s": raw_s, **positive_pair_purity(knn.indices[:, :10], y),
                      **knn_ceiling(X, y)}))

    for space in SPACES[1:]:
        if space not in spaces:
            continue
        t0 = time.perf_counter()
        miner = KNNPairMiner(n_neighbors=10, knn=lambda _X, k: knn.indices[:, :k],
                             mutual=space != "siamese")
        augment = default_augmenter(data.image_shape) if space == "siamese-augment" else None
        emb = SiameseEmbedder(miner=miner, n_epochs=args.siamese_epochs, random_state=args.seed,
                              augment=augment)
        Z = emb.fit_transform(X)
        siamese_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        knn_z = knn_search(Z, max(KS), method="exact", progress=True)
        z_s = time.perf_counter() - t0
        rows.append((space, purity_curve(knn_z.indices, y, KS),
                     {"siamese_train_s": siamese_s, "knn_s": z_s,
                      "siamese_epochs": args.siamese_epochs,
                      "siamese_positive_anchors": int(emb.miner_.n_anchors_),
                      "siamese_final_loss": float(emb.history_[-1]), **knn_ceiling(Z, y)}))

    for space, pur, extra in rows:
        metrics = {f"purity_at_{k}": v for k, v in pur.items()}
        metrics.update(extra)
        metrics.update({"n": int(X.shape[0]), "load_s": load_s})
        wall = extra.get("knn_s", 0.0) + extra.get("siamese_train_s", 0.0)
        write_result(
            args.out, benchmark="graph_quality", dataset=f"{name}" + (f"[:{args.subsample}]" if args.subsample else ""),
            model=space, metrics=metrics, wall_s=wall, peak_rss_mb=peak_rss_mb(), command=command,
        )

    print("\n| space | purity@10 | purity@20 | purity@100 | 5-NN test ACC | train (s) | "
          "kNN k=100 (s) |")
    print("|---|---|---|---|---|---|---|")
    for space, pur, extra in rows:
        ceiling = extra.get("knn5_test_acc")
        print(f"| {space} | {pur[10]:.4f} | {pur[20]:.4f} | {pur[100]:.4f} | "
              f"{'–' if ceiling is None else f'{ceiling:.4f}'} | "
              f"{extra.get('siamese_train_s', 0):.1f} | {extra['knn_s']:.1f} |")
    if "raw" in spaces:
        m = rows[0][2]
        print(f"\nSiamese positives from the raw 10-NN: all pairs {m['pair_purity_all']:.4f} "
              f"same-label, mutual pairs {m['pair_purity_mutual']:.4f} "
              f"({m['mutual_anchor_share']:.4f} of the points have one)")

    if not args.skip_memory:
        _memory_run(args, name, command)
    return 0


def positive_pair_purity(indices: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Label purity of the pairs ``(i, indices[i, c])``, all of them and the mutual ones.

    A pair is mutual when ``i`` is also in row ``indices[i, c]``. Also returns the share of
    points that have at least one mutual neighbour (the mutual miner's positive anchors).
    """
    mutual = mutual_neighbors(indices)
    same = y[indices] == y[:, None]
    return {"pair_purity_all": float(same.mean()),
            "pair_purity_mutual": float(same[mutual].mean()),
            "mutual_anchor_share": float(mutual.any(1).mean())}


def knn_ceiling(Z: np.ndarray, y: np.ndarray, n_train: int = 60_000) -> dict[str, float]:
    """5-NN classifier accuracy on MNIST-test, fitted on MNIST-train labels (70k rows only)."""
    if Z.shape[0] != 70_000:
        return {}
    from sklearn.neighbors import KNeighborsClassifier

    clf = KNeighborsClassifier(5).fit(Z[:n_train], y[:n_train])
    return {"knn5_test_acc": float((clf.predict(Z[n_train:]) == y[n_train:]).mean())}


def _memory_run(args, name: str, command: str) -> None:
    """Peak RSS of `graphclust build-graph --k 100` (raw space) in a fresh process."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "g.npz"
        cmd = [sys.executable, "-m", "graphclust", "build-graph", args.data, "--data-dir", args.data_dir,
               "--embedder", "none",
               "--k", "100", "--kernel", "gaussian", "-o", str(out), "-q"]
        if args.subsample:
            cmd += ["--max-samples", str(args.subsample)]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True)
        wall = time.perf_counter() - t0
        rss = peak_rss_mb(children=True)
        size_mb = out.stat().st_size / 2**20
    write_result(
        args.out, benchmark="graph_memory", dataset=name + (f"[:{args.subsample}]" if args.subsample else ""),
        model="build-graph k=100 raw", metrics={"k": 100, "graph_file_mb": size_mb}, wall_s=wall,
        peak_rss_mb=rss, command=" ".join(cmd),
    )
    print(f"\nbuild-graph k=100: {wall:.1f} s, peak RSS {rss:.0f} MiB, file {size_mb:.1f} MiB")


if __name__ == "__main__":
    sys.exit(main())

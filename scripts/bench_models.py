"""Benchmark: every clustering model, with and without the graph regulariser, on MNIST,
20 Newsgroups (tf-idf) and COIL-20, beside the accuracies published in the seeds.

For each data set, model, graph variant and seed the script fits the estimator, scores
ACC / NMI / ARI against the labels, and writes one JSON result (``scripts/_bench_common.py``)
under ``--out``; at the end it prints one Markdown table of mean ± std over the seeds with
the wall time, and the published ACC of the seeds next to it (``--table FILE`` saves it).

Graph variants: "none" trains the model's own objective; "graph" adds DGG's neighbour
term (``GraphRegularizer``) on a kNN graph of the pretrained autoencoder's latent means
(``--n-neighbors``, self-tuning Gaussian kernel, built inside the run). For the VaDE/DGG
pair the graph variant *is* DGG; AE+GMM has no training stage to regularise.

Usage::

    python scripts/bench_models.py --seeds 3                          # the real benchmark
    python scripts/bench_models.py --max-samples 500 --epochs 1 --pretrain-epochs 1 \\
        --seeds 1 --hidden 64 --pair-hidden 32 --pair-epochs 1 --vimco-samples 2   # a quick check
    python scripts/bench_models.py --subsample 10000 --seeds 3       # 10,000 random rows each
    python scripts/bench_models.py --datasets coil20 --from-results  # table of the stored runs
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench_common import command_line, peak_rss_mb, write_result  # noqa: E402

from graphclust.data.loaders import load_dataset  # noqa: E402
from graphclust.estimators import (  # noqa: E402
    AEGMM,
    DGG,
    GMVAE,
    KDAE,
    KDVAE,
    VCAMI,
    GraphRegularizer,
    VaDE,
)
from graphclust.metrics import score_clustering  # noqa: E402
from graphclust.models.pipeline import KNNGraphBuilder  # noqa: E402
from graphclust.utils import atomic_path  # noqa: E402

DATASETS = ("mnist", "20news", "coil20")
#: model families; the graph variant of "vade" is DGG
MODELS = ("aegmm", "vade", "gmvae", "kdvae", "kdae", "vcami")
LABELS = {"aegmm": "AE+GMM", "vade": "VaDE", "dgg": "DGG", "gmvae": "GMVAE (slides)",
          "kdvae": "k-DVAE", "kdae": "k-DAE", "vcami": "VCAMI"}

#: Clustering ACC (%) quoted in the seeds, from /work/shared/seeds/README.md (its table
#: "Accuracy anchors quoted in the seeds"); the seeds report no 20 Newsgroups or COIL-20
#: numbers. The seeds' models train without our plug-in regulariser, except DGG.
PUBLISHED: dict[tuple[str, str], str] = {
    ("mnist", "dgg"): "97.58±0.1 (seeds 002/003)",
    ("mnist", "vade"): "94.43±0.1 (seed 003)",
    ("mnist", "aegmm"): "82.20 (seed 003)",
    ("mnist", "kdae"): "96.51 (seed 003)",
    ("mnist", "kdvae"): "97.87±0.1 (seed 003)",
    ("mnist", "gmvae"): "96.55±2.64, best 98.40 (seed 001)",
    ("mnist", "vcami"): "99.5 (seed 004)",
}


def _hidden(text: str | None) -> tuple[int, ...] | None:
    return None if text is None else tuple(int(v) for v in text.split(",") if v.strip())


def build_estimator(model: str, with_graph: bool, args: argparse.Namespace, n_clusters: int,
                    image_shape, seed: int):
    """The estimator of one run (``None`` when the combination does not exist)."""
    common: dict[str, Any] = dict(
        n_clusters=n_clusters, latent_dim=args.latent_dim, pretrain_epochs=args.pretrain_epochs,
        device=args.device, random_state=seed, verbose=args.verbose,
    )
    if args.hidden:
        common["hidden"] = _hidden(args.hidden)
    train = dict(n_epochs=args.epochs, batch_size=args.batch_size)
    builder = KNNGraphBuilder(k=args.n_neighbors, space="latent")
    reg = GraphRegularizer(builder, weight=args.graph_weight, n_sample=1) if with_graph else None
    if model == "aegmm":
        return None if with_graph else AEGMM(**common)
    if model == "vade":
        if with_graph:
            return DGG(graph=builder, n_neighbors=args.n_neighbors, **common, **train)
        return VaDE(**common, **train)
    if model == "gmvae":
        return GMVAE(graph_regularizer=reg, n_samples=args.vimco_samples, **common, **train)
    if model in ("kdvae", "kdae"):
        cls = KDVAE if model == "kdvae" else KDAE
        pair = dict(common)
        pair["init_hidden"] = pair.pop("hidden", (500, 500, 2000))
        if args.pair_hidden:
            pair["hidden"] = _hidden(args.pair_hidden)
        return cls(graph_regularizer=reg, pair_epochs=args.pair_epochs, **pair, **train)
    if model == "vcami":
        return VCAMI(graph_regularizer=reg, image_shape=image_shape, **common, **train)
    raise ValueError(f"unknown model {model!r}")


def _fmt(values: list[float], scale: float = 100.0) -> str:
    if not values:
        return "–"
    mean = statistics.fmean(values) * scale
    if len(values) == 1:
        return f"{mean:.2f}"
    return f"{mean:.2f} ± {statistics.stdev(values) * scale:.2f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default=",".join(DATASETS), help="comma-separated (default all)")
    ap.add_argument("--models", default=",".join(MODELS),
                    help=f"comma-separated model families from {MODELS} (default all)")
    ap.add_argument("--graph", choices=("both", "none", "graph"), default="both",
                    help="graph variants to run (default both)")
    ap.add_argument("--seeds", type=int, default=3, help="seeds per configuration (default 3)")
    ap.add_argument("--data-dir", default="/work/shared/data")
    ap.add_argument("--max-samples", type=int, default=None,
                    help="use the first N rows (files ordered by class give few classes)")
    ap.add_argument("--subsample", type=int, default=None,
                    help="use N rows drawn at random (seed 0) instead")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--pretrain-epochs", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--latent-dim", type=int, default=10)
    ap.add_argument("--hidden", default=None,
                    help="autoencoder widths, e.g. 500,500,2000 (default: each model's)")
    ap.add_argument("--pair-hidden", default=None, help="k-DVAE/k-DAE pair widths (default 500,100)")
    ap.add_argument("--pair-epochs", type=int, default=10)
    ap.add_argument("--vimco-samples", type=int, default=15)
    ap.add_argument("--n-neighbors", type=int, default=20)
    ap.add_argument("--graph-weight", type=float, default=0.5)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", default="results", help="folder of the JSON results")
    ap.add_argument("--table", default=None, help="also write the Markdown table to this file")
    ap.add_argument("--from-results", action="store_true",
                    help="fit nothing: build the table from the JSON files already in --out "
                         "(the newest run of each seed)")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args(argv)

    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(models) - set(MODELS))
    if unknown:
        ap.error(f"unknown models {unknown}; choose from {MODELS}")
    variants = {"both": (False, True), "none": (False,), "graph": (True,)}[args.graph]
    command = command_line()
    runs: dict[tuple[str, str, bool], list[dict]] = defaultdict(list)
    if args.from_results:
        runs = collect_results(args.out, datasets, models, variants)
        if not runs:
            raise SystemExit(f"no models__*.json results for {datasets} / {models} in {args.out}")
        datasets = []  # nothing to fit: only the table is made

    for name in datasets:
        data = load_dataset(name, data_dir=args.data_dir, max_samples=args.max_samples)
        if data.y is None:
            raise SystemExit(f"{name} has no labels to score against")
        if args.subsample is not None and args.subsample < data.X.shape[0]:
            rows = np.sort(np.random.default_rng(0).choice(data.X.shape[0], args.subsample,
                                                           replace=False))
            data = dataclasses.replace(data, X=np.ascontiguousarray(data.X[rows]), y=data.y[rows])
        n_clusters = len(set(data.y.tolist()))
        print(f"== {data.name}: {data.X.shape[0]} x {data.X.shape[1]}, {n_clusters} classes",
              flush=True)
        for model in models:
            for with_graph in variants:
                for seed in range(args.seeds):
                    est = build_estimator(model, with_graph, args, n_clusters, data.image_shape, seed)
                    if est is None:
                        continue
                    label = "dgg" if (model == "vade" and with_graph) else model
                    t0 = time.perf_counter()
                    est.fit(data.X)
                    wall = time.perf_counter() - t0
                    scores = score_clustering(data.y, est.labels_).as_dict()
                    record = {**scores, "wall_s": wall, "seed": seed}
                    runs[(data.name, model, with_graph)].append(record)
                    tag = ("graph" if with_graph else "plain") + f"-seed{seed}"
                    write_result(
                        args.out, benchmark="models", dataset=data.name,
                        model=label + ("" if label == "dgg" or not with_graph else "+graph"),
                        metrics={**scores, "seed": seed, "n_samples": int(data.X.shape[0]),
                                 "epochs": args.epochs, "pretrain_epochs": args.pretrain_epochs,
                                 "graph_regularizer": with_graph,
                                 "stage_seconds": {k: v["seconds"]
                                                   for k, v in est.stage_times_.items()}},
                        wall_s=wall, peak_rss_mb=peak_rss_mb(), command=command, tag=tag,
                    )
                    print(f"   {LABELS[label]:<15} graph={'yes' if with_graph else 'no ':<3} "
                          f"seed {seed}: ACC {scores['acc']:.4f} NMI {scores['nmi']:.4f} "
                          f"ARI {scores['ari']:.4f} ({wall:.1f} s)", flush=True)

    table = format_table(runs)
    print(table)
    if args.table:
        with atomic_path(Path(args.table)) as tmp:
            tmp.write_text(table + "\n")
    return 0 if all(math.isfinite(r["acc"]) for recs in runs.values() for r in recs) else 1


def collect_results(out: str | Path, datasets: list[str], models: list[str],
                    variants: tuple[bool, ...]) -> dict[tuple[str, str, bool], list[dict]]:
    """Runs recorded under ``out`` by earlier calls, keyed as :func:`main` keys its own.

    For each (data set, family, graph variant, seed) the newest file wins, so a rerun replaces
    an interrupted or disturbed one. Families and variants not asked for are left out.
    """
    newest: dict[tuple[str, str, bool, int], tuple[str, dict]] = {}  # key -> (date, record)
    for path in sorted(Path(out).glob("models__*.json")):
        rec = json.loads(path.read_text())
        if rec.get("benchmark") != "models" or rec.get("dataset") not in datasets:
            continue
        m = rec["metrics"]
        with_graph = bool(m["graph_regularizer"])
        label = rec["model"].split("+")[0]
        family = "vade" if label == "dgg" else label
        if family not in models or with_graph not in variants:
            continue
        key = (rec["dataset"], family, with_graph, int(m["seed"]))
        if key not in newest or rec["date"] > newest[key][0]:
            newest[key] = (rec["date"], {"acc": m["acc"], "nmi": m["nmi"], "ari": m["ari"],
                                         "wall_s": rec["wall_s"], "seed": m["seed"]})
    runs: dict[tuple[str, str, bool], list[dict]] = defaultdict(list)
    # data sets and families in the order asked for, plain before graph, seeds ascending
    for key in sorted(newest, key=lambda k: (datasets.index(k[0]), models.index(k[1]), *k[2:])):
        runs[key[:3]].append(newest[key][1])
    return runs


def format_table(runs: dict[tuple[str, str, bool], list[dict]]) -> str:
    """Markdown table of mean ± std over seeds, with the published ACC beside each row."""
    lines = [
        ("| data | model | graph regulariser | seeds | ACC % | NMI % | ARI % | wall s "
         "| published ACC % |"),
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for (dname, model, with_graph), recs in runs.items():
        label = "dgg" if (model == "vade" and with_graph) else model
        key = (dname.lower(), label)
        lines.append(
            f"| {dname} | {LABELS[label]} | {'yes' if with_graph else 'no'} | {len(recs)} | "
            f"{_fmt([r['acc'] for r in recs])} | {_fmt([r['nmi'] for r in recs])} | "
            f"{_fmt([r['ari'] for r in recs])} | {_fmt([r['wall_s'] for r in recs], 1.0)} | "
            f"{PUBLISHED.get(key, '–')} |"
        )
    return "\n".join(lines) + (
        "\n\nMean ± sample std over the seeds; published numbers from "
        "/work/shared/seeds/README.md (full data, the papers' training budgets)."
    )


if __name__ == "__main__":
    sys.exit(main())

"""``graphclust train``: fit a clustering model on a data set into a resumable run folder.

Models (``--model``): ``dgg`` (default), ``vade``, ``gmvae`` (the slides' GMVAE: q(z|y,x),
VIMCO, std annealing), ``kdvae`` and ``kdae`` (k encoder/decoder pairs), ``vcami``
(augmented mutual information), ``aegmm`` (autoencoder + Gaussian mixture baseline).

A run folder holds::

    config.json          settings, seed, data summary, package versions (written at start;
                         ``graph``: the graph to inspect the run on, set when finished)
    checkpoints/         stage artifacts (ae, init, graph, pretrained head), per-epoch
                         checkpoint.pt, final model.safetensors
    log.jsonl            one JSON line per training epoch (loss, lr, ACC/NMI/ARI with labels)
    labels.npy           one cluster per row of DATA (int64)
    inspection.npz       soft assignments, latent means, learned affinity on the graph's edges
                         (see graphclust.inspect.interface)
    metrics.json         final ACC/NMI/ARI (with labels), wall time per stage

Without ``--graph``, DGG builds its kNN graph on the pretrained autoencoder's latent means
(``--graph-space input`` for the data itself); VaDE trains without a graph, and for
inspection only a kNN graph of its final latent means is saved as
``checkpoints/latent_graph.npz``.

``gmvae``, ``kdvae``, ``kdae`` and ``vcami`` take DGG's neighbour term as a plug-in graph
regulariser (``graphclust.models.regularizer.GraphRegularizer``): with ``--graph FILE`` they
train on that graph, with ``--regularize`` on a graph built like DGG's; ``--graph-weight``
is the neighbours' share of each node's objective. ``vade`` and ``aegmm`` use a given graph
for inspection only.

``--resume`` reuses finished stages and continues training from the last checkpoint; the
result equals an uninterrupted run. An existing folder is never overwritten without
``--force``.

Distributed training (``dgg`` and ``vade``): launched by torchrun, e.g.
``torchrun --nproc-per-node 2 -m graphclust train DATA --model dgg -o runs/x``, every
process loads DATA and trains with DistributedDataParallel (``--distributed`` is implied;
gloo on CPU, nccl with one GPU per process). ``--batch-size`` stays the global batch: each
of N processes trains on batch-size/N anchors of every batch (with their neighbours), so
the result matches a one-process run up to floating-point summation order. Rank 0 pretrains,
writes the run folder and prints; the other ranks print nothing. ``--resume`` works across
process counts (the checkpoints are the same).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from graphclust.commands.runfolder import prepare_run_folder, write_jsonl
from graphclust.utils import (
    GraphclustError,
    atomic_path,
    prepare_output,
    versions,
    write_json,
)

MODELS = ("dgg", "vade", "gmvae", "kdvae", "kdae", "vcami", "aegmm")
#: ``--likelihood`` values: "auto" and the names of graphclust.nn.likelihood.LIKELIHOODS
#: (spelled out so that building the parser does not import torch; a test keeps them equal)
LIKELIHOOD_CHOICES = ("auto", "bernoulli", "gaussian", "multinomial")
#: ``--init`` values: graphclust.models.pretrain.INIT_NAMES (spelled out likewise; tested)
INIT_CHOICES = ("gmm", "umap", "umap-input", "umap-input-consensus")
#: models that train with the plug-in graph regulariser when given a graph
_REGULARIZABLE = ("gmvae", "kdvae", "kdae", "vcami")
#: config keys that may change between a run and its resumption
_RESUMABLE = {"epochs", "device"}
#: settings added after the first release, with the value a run folder without them implied
_LATER_DEFAULTS = {"regularize": False, "graph_weight": 0.5, "vimco_samples": 15,
                   "pair_hidden": "500,100", "pair_epochs": 10, "label_epochs": 0,
                   "label_weight": 0.0,
                   "grad_clip": None, "gmm_n_init": 1, "umap_neighbors": 20,
                   "likelihood": "auto", "likelihood_scale": None}
#: models that train data-parallel under torchrun / --distributed
_DISTRIBUTED = ("dgg", "vade")


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "train",
        help="train a clustering model (DGG, VaDE, GMVAE, k-DVAE, k-DAE, VCAMI, AE+GMM) "
             "into a run folder",
        description=(
            "Pretrain an autoencoder, cluster its latent space and train a model on DATA: a "
            "dataset name (mnist, 20news, coil20, digits, ...) or a .npz/.npy/.csv file. DGG "
            "trains with a kNN graph (without --graph it builds one on the pretrained "
            "autoencoder's latent means); gmvae, kdvae, kdae and vcami use DGG's neighbour term "
            "as a graph regulariser with --graph or --regularize."
        ),
    )
    p.add_argument("data", help="dataset name or path to .npz / .npy / .csv")
    p.add_argument("--model", choices=MODELS, default="dgg", help="model to train (default dgg)")
    p.add_argument("-o", "--output", required=True, help="run folder, e.g. runs/mnist-dgg")
    p.add_argument("--n-clusters", type=int, default=None,
                   help="number of clusters (default: number of label classes)")
    p.add_argument("--graph", default=None,
                   help="kNN graph .npz of DATA from `graphclust build-graph` (default: DGG builds "
                        "one on the AE latent; VaDE uses a given graph for affinity reports only)")
    p.add_argument("--epochs", type=int, default=30, help="training epochs (default 30)")
    p.add_argument("--pretrain-epochs", type=int, default=20,
                   help="autoencoder pretraining epochs (default 20)")
    p.add_argument("--batch-size", type=int, default=256, help="anchors per batch (default 256)")
    p.add_argument("--lr", type=float, default=5e-4, help="learning rate (default 5e-4; the paper used 2e-3 from scratch)")
    p.add_argument("--n-neighbors", type=int, default=20,
                   help="neighbours of the graph DGG builds when --graph is not given (default 20)")
    p.add_argument("--neighbor-sample", default="1",
                   help="neighbours sampled per anchor and batch, or 'all' (default 1)")
    p.add_argument("--graph-space", choices=("latent", "input"), default="latent",
                   help="where DGG (or --regularize) builds its graph without --graph "
                        "(default: AE latent means)")
    p.add_argument("--regularize", action="store_true",
                   help="gmvae/kdvae/kdae/vcami: train with the graph regulariser on a graph built "
                        "like DGG's (implied by --graph)")
    p.add_argument("--graph-weight", type=float, default=0.5,
                   help="neighbours' share of each node's objective in the graph regulariser "
                        "(default 0.5, as DGG)")
    p.add_argument("--vimco-samples", type=int, default=15,
                   help="gmvae: VIMCO samples per row (default 15, as the slides)")
    p.add_argument("--pair-hidden", default="500,100",
                   help="kdvae/kdae: encoder widths of each pair (default 500,100; --hidden is the "
                        "autoencoder that finds the initial clusters)")
    p.add_argument("--pair-epochs", type=int, default=10,
                   help="kdvae/kdae: epochs of pretraining each pair on its initial cluster "
                        "(default 10)")
    p.add_argument("--pi-update", choices=("epoch", "batch"), default="epoch",
                   help="node mixing weights recomputed once per epoch (default) or per batch")
    p.add_argument("--init", choices=INIT_CHOICES, default="gmm",
                   help="clustering that starts the model: diagonal GMM of the AE latent "
                        "(default), UMAP + full GMM of the AE latent (N2D recipe, needs "
                        "umap-learn), UMAP + full GMM of the input features (umap-input), or "
                        "the consensus of nine such runs of the input features with UMAP "
                        "neighbourhoods --umap-neighbors - 2 .. --umap-neighbors and the "
                        "euclidean, cosine and correlation metrics (umap-input-consensus)")
    p.add_argument("--umap-neighbors", type=int, default=20,
                   help="--init umap*: UMAP's n_neighbors (default 20; 5 on COIL-20)")
    p.add_argument("--gmm-n-init", type=int, default=1,
                   help="--init umap*: restarts of the full GMM, the most likely "
                        "kept (default 1; 10 on COIL-20, see BENCHMARKS.md)")
    p.add_argument("--label-epochs", type=int, default=0,
                   help="dgg/vade: epochs of fitting encoder, decoder and prior to the start's "
                        "labels before the head (default 0; helps the --init umap* starts)")
    p.add_argument("--label-weight", type=float, default=0.0,
                   help="dgg/vade: weight of ln q(label | x) during label fitting, which trains "
                        "the cluster posterior with the encoder to predict the start's labels "
                        "(default 0; needs --label-epochs; 10 on MNIST, see BENCHMARKS.md)")
    p.add_argument("--grad-clip", default=None,
                   help="dgg/vade: clip each step's gradient norm at this multiple of the "
                        "previous epoch's median norm, or 'none' (default 10)")
    p.add_argument("--posterior", choices=("head", "gmm"), default="head",
                   help="cluster posterior: classifier head (default) or GMM posterior")
    p.add_argument("--latent-dim", type=int, default=10, help="latent dimension (default 10)")
    p.add_argument("--likelihood", choices=LIKELIHOOD_CHOICES, default="auto",
                   help="decoder likelihood (default auto: bernoulli for data in [0, 1], else "
                        "gaussian; multinomial for word counts or tf-idf rows)")
    p.add_argument("--likelihood-scale", type=float, default=None,
                   help="the likelihood's scale: gaussian noise std, or multinomial counts per "
                        "unit of the data (default: 1)")
    p.add_argument("--hidden", default="500,500,2000",
                   help="encoder widths, comma separated (default 500,500,2000)")
    p.add_argument("--data-dir", default=None,
                   help="folder with benchmark files (default: $GRAPHCLUST_DATA_DIR or ~/.cache/graphclust)")
    p.add_argument("--download", action="store_true", help="download a named dataset when missing")
    p.add_argument("--max-samples", type=int, default=None, help="use only the first N rows")
    p.add_argument("--seed", type=int, default=0, help="random seed of the whole run (default 0)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    p.add_argument("--distributed", action="store_true",
                   help="dgg/vade: train data-parallel (DistributedDataParallel) in every process "
                        "of a torchrun job, e.g. `torchrun --nproc-per-node 2 -m graphclust train "
                        "...` (automatic under torchrun); gloo on CPU, nccl with one GPU per "
                        "process; --batch-size is the global batch, split over the processes; "
                        "only rank 0 writes files and prints")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in the output folder (finished stages are reused)")
    p.add_argument("--force", action="store_true", help="delete an existing run folder and start over")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars or epoch lines")
    return p


def _parse_hidden(text: str, flag: str = "--hidden") -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise GraphclustError(
            f"{flag} must be comma-separated integers like 500,500,2000, got {text!r}") from None


def _parse_sample(text: str) -> int | None:
    if str(text).lower() == "all":
        return None
    try:
        v = int(text)
    except ValueError:
        v = 0
    if v < 1:
        raise GraphclustError(f"--neighbor-sample must be a positive integer or 'all', got {text!r}")
    return v


def _init(args: argparse.Namespace) -> Any:
    """The estimators' ``init``: its name, or a UMAP start with other settings."""
    if args.init == "gmm" or (args.gmm_n_init, args.umap_neighbors) == (1, 20):
        return args.init
    from graphclust.models.pretrain import named_init

    return named_init(args.init, args.umap_neighbors, args.gmm_n_init)


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    keys = ("data", "model", "n_clusters", "graph", "epochs", "pretrain_epochs", "batch_size", "lr",
            "n_neighbors", "neighbor_sample", "graph_space", "pi_update", "init", "posterior",
            "latent_dim", "hidden", "max_samples", "seed", "device", *_LATER_DEFAULTS)
    return {k: getattr(args, k) for k in keys}


def run(args: argparse.Namespace) -> int:
    from graphclust import distributed as gdist

    ctx = None
    if args.distributed or gdist.launched_by_torchrun():
        if args.model not in _DISTRIBUTED:
            raise GraphclustError(
                f"distributed training supports --model {' / '.join(_DISTRIBUTED)}, not "
                f"{args.model}; run {args.model} in one process (without torchrun)"
            )
        ctx = gdist.init_distributed(args.device)
    ok = False
    try:
        rc = _run(args, ctx)
        ok = True
        return rc
    finally:
        # on success every rank meets at a barrier before the group goes (see shutdown)
        gdist.shutdown(ctx, barrier=ok)


def _run(args: argparse.Namespace, ctx: Any) -> int:
    """The command; ``ctx`` is a DistContext (data-parallel dgg/vade) or None."""
    from graphclust.data.loaders import load_dataset
    from graphclust.estimators import AEGMM, DGG, GMVAE, KDAE, KDVAE, VCAMI, VaDE
    from graphclust.graph.graph import KNNGraph
    from graphclust.models.pipeline import KNNGraphBuilder
    from graphclust.models.regularizer import GraphRegularizer
    from graphclust.models.training import TrainConfig, parse_grad_clip
    from graphclust.nn.likelihood import get_likelihood

    t_start = time.perf_counter()
    out = Path(args.output)
    hidden = _parse_hidden(args.hidden)
    pair_hidden = _parse_hidden(args.pair_hidden, "--pair-hidden")
    sample = _parse_sample(args.neighbor_sample)
    if args.grad_clip is not None and args.model not in ("dgg", "vade"):
        raise GraphclustError(f"--grad-clip applies to dgg and vade, not {args.model}")
    if args.model in ("dgg", "vade"):  # saved in the config as a number or null
        args.grad_clip = (TrainConfig.grad_clip if args.grad_clip is None
                          else parse_grad_clip(args.grad_clip))
    if min(args.epochs, args.pretrain_epochs, args.pair_epochs, args.label_epochs) < 0:
        raise GraphclustError(
            "--epochs, --pretrain-epochs, --pair-epochs and --label-epochs must be >= 0")
    if args.gmm_n_init < 1 or args.umap_neighbors < 2:
        raise GraphclustError(f"--gmm-n-init must be >= 1 and --umap-neighbors >= 2, got "
                              f"{args.gmm_n_init} and {args.umap_neighbors}")
    if (args.gmm_n_init, args.umap_neighbors) != (1, 20) and args.init == "gmm":
        raise GraphclustError(
            "--gmm-n-init and --umap-neighbors apply to the --init umap* starts, not to the "
            "diagonal GMM of --init gmm")
    if args.label_epochs and args.model not in ("dgg", "vade"):
        raise GraphclustError(f"--label-epochs applies to dgg and vade, not {args.model}")
    if not (math.isfinite(args.label_weight) and args.label_weight >= 0):
        raise GraphclustError(f"--label-weight must be a finite number >= 0, got "
                              f"{args.label_weight}")
    if args.label_weight and not args.label_epochs:
        raise GraphclustError("--label-weight weights a term of label fitting: it needs "
                              "--label-epochs > 0")
    if args.regularize and args.model not in _REGULARIZABLE + ("dgg",):
        raise GraphclustError(
            f"--regularize applies to {', '.join(_REGULARIZABLE)} (dgg always trains on a graph); "
            f"{args.model} has no graph-regularised training"
        )
    if not 0 <= args.graph_weight < 1:
        raise GraphclustError(f"--graph-weight must lie in [0, 1), got {args.graph_weight}")
    if args.model == "gmvae" and args.likelihood_scale is not None and args.likelihood != "multinomial":
        raise GraphclustError(
            "--likelihood-scale applies to gmvae's multinomial likelihood only: its gaussian "
            "learns its standard deviation")
    if args.model == "gmvae" and args.vimco_samples < 2:
        raise GraphclustError(f"--vimco-samples must be >= 2, got {args.vimco_samples}")
    main = ctx is None or ctx.is_main

    def on_main(fn):
        """``fn()`` on rank 0 only (its result or error reaches every rank)."""
        return fn() if ctx is None else ctx.run_on_main(fn)

    def refuse_existing() -> None:
        # refuse an existing folder before any work, but create it only once the data loaded
        if out.exists() and not (args.resume or args.force):
            prepare_output(out, force=False, is_dir=True)  # raises: exists already

    on_main(refuse_existing)

    t0 = time.perf_counter()
    data = load_dataset(args.data, data_dir=args.data_dir, download=args.download,
                        max_samples=args.max_samples)
    load_s = time.perf_counter() - t0
    X, y = data.X, data.y
    # resolved here so that bad data fails before the run folder exists; without a scale the
    # estimators get the name, which lets gmvae turn "gaussian" into its learned-std Gaussian
    resolved = get_likelihood(args.likelihood, X, scale=args.likelihood_scale)
    likelihood = resolved.name if args.likelihood_scale is None else resolved
    if args.n_clusters is None:
        if y is None:
            raise GraphclustError(
                f"{data.name} has no labels to count classes from; pass --n-clusters K"
            )
        args.n_clusters = int(np.unique(y).size)
    graph = KNNGraph.load(args.graph) if args.graph else None
    if graph is not None:
        graph.check_matches(X)

    settings = _settings(args)
    config_path = out / "config.json"
    ckpt_dir = out / "checkpoints"
    config: dict[str, Any] = {
        "command": "train",
        "model": args.model,
        "settings": settings,
        "data": {"name": data.name, "source": data.source, "n_samples": int(X.shape[0]),
                 "n_features": int(X.shape[1]), "likelihood": resolved.name,
                 "has_labels": y is not None},
        "graph": str(Path(args.graph).resolve()) if args.graph else None,
        "versions": versions(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    if ctx is not None:
        config["distributed"] = {"world_size": ctx.world_size, "backend": ctx.backend}

    def start_folder() -> bool:
        resumed = prepare_run_folder(out, args.resume, args.force)
        if resumed:
            old = json.loads(config_path.read_text())
            before = {**_LATER_DEFAULTS, **old["settings"]}
            diff = sorted(k for k in set(before) | set(settings)
                          if k not in _RESUMABLE and before.get(k) != settings.get(k))
            if diff:
                raise GraphclustError(
                    f"cannot resume {out}: settings differ from the original run "
                    f"({', '.join(diff)}); use the original settings, or --force to start over"
                )
        else:
            out.mkdir()
        ckpt_dir.mkdir(exist_ok=True)
        write_json(config_path, config)
        return resumed

    resumed = on_main(start_folder)

    log_path = out / "log.jsonl"

    def log_epoch(record: dict, history: list) -> None:
        if main:
            write_jsonl(log_path, history)

    common: dict[str, Any] = {
        "n_clusters": args.n_clusters, "latent_dim": args.latent_dim, "hidden": hidden,
        "likelihood": likelihood, "init": _init(args),
        "n_epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
        "pretrain_epochs": args.pretrain_epochs, "checkpoint_dir": ckpt_dir, "resume": resumed,
        "callbacks": [log_epoch], "device": args.device, "random_state": args.seed,
        "verbose": not args.quiet and main,
    }
    if ctx is not None:  # only dgg and vade get here (checked in run)
        common["distributed"] = ctx
    builder = KNNGraphBuilder(k=args.n_neighbors, space=args.graph_space)
    if args.model == "dgg":
        model = DGG(graph=graph if graph is not None else builder, n_neighbors=args.n_neighbors,
                    neighbor_sample=sample, pi_update=args.pi_update,
                    posterior=args.posterior, label_epochs=args.label_epochs,
                    label_weight=args.label_weight,
                    grad_clip=args.grad_clip, **common)
    elif args.model == "vade":
        model = VaDE(graph=graph, posterior=args.posterior, label_epochs=args.label_epochs,
                     label_weight=args.label_weight,
                     grad_clip=args.grad_clip, **common)
    elif args.model == "aegmm":
        model = AEGMM(graph=graph, **{k: v for k, v in common.items()
                                      if k not in ("n_epochs", "batch_size", "lr", "callbacks")})
    else:
        reg = None
        if graph is not None or args.regularize:
            reg = GraphRegularizer(graph if graph is not None else builder,
                                   weight=args.graph_weight, n_sample=sample)
        if args.model == "gmvae":
            model = GMVAE(graph_regularizer=reg, n_samples=args.vimco_samples, **common)
        elif args.model in ("kdvae", "kdae"):
            cls = KDVAE if args.model == "kdvae" else KDAE
            model = cls(graph_regularizer=reg, **{**common, "hidden": pair_hidden},
                        init_hidden=hidden, pair_epochs=args.pair_epochs)
        else:
            model = VCAMI(graph_regularizer=reg, image_shape=data.image_shape, **common)
    model.fit(X, y)
    on_main(lambda: _write_outputs(args, ctx, out, config, model, X, y, load_s, resumed, t_start))
    return 0


def _write_outputs(args: argparse.Namespace, ctx: Any, out: Path, config: dict, model: Any,
                   X: np.ndarray, y: np.ndarray | None, load_s: float, resumed: bool,
                   t_start: float) -> None:
    """Labels, inspection arrays, log, metrics and the finished config of a trained run."""
    from graphclust.inspect.interface import inspection_arrays, save_inspection
    from graphclust.metrics import score_clustering
    from graphclust.models.pipeline import KNNGraphBuilder

    ckpt_dir = out / "checkpoints"
    config_path = out / "config.json"
    log_path = out / "log.jsonl"
    data_name = config["data"]["name"]
    # the graph the run is inspected on: the given one, the one DGG built, or (VaDE without
    # --graph) a kNN graph of its final latent means, built here for inspection only
    graph_used, graph_file = model.graph_, None
    if args.graph:
        graph_file = str(Path(args.graph).resolve())
    elif graph_used is not None:
        graph_file = "checkpoints/graph.npz"
    else:
        graph_used = KNNGraphBuilder(k=min(args.n_neighbors, X.shape[0] - 1))(
            X, model.embedding_, args.device)
        graph_used.save(ckpt_dir / "latent_graph.npz")
        graph_file = "checkpoints/latent_graph.npz"
    save_inspection(out, inspection_arrays(model, X, graph=graph_used, y=y))
    with atomic_path(out / "labels.npy") as tmp, open(tmp, "wb") as fh:
        np.save(fh, model.labels_)
    write_jsonl(log_path, model.history_)
    stage_times = {"load": {"seconds": load_s, "cached": False}, **model.stage_times_}
    metrics: dict[str, Any] = {
        "model": args.model,
        "data": data_name,
        "n_samples": int(X.shape[0]),
        "n_clusters": int(args.n_clusters),
        "epochs": len(model.history_),
        "seed": args.seed,
        "resumed": resumed,
        "stage_times": stage_times,
        "stage_seconds": {k: v["seconds"] for k, v in stage_times.items()},
        "wall_time_s": time.perf_counter() - t_start,
    }
    if ctx is not None:
        metrics["world_size"] = ctx.world_size
    if y is not None:
        metrics["scores"] = score_clustering(y, model.labels_).as_dict()
        metrics["init_scores"] = score_clustering(y, model.init_.labels).as_dict()
    config["graph"] = graph_file  # read by `graphclust inspect`
    config["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    write_json(config_path, config)
    write_json(out / "metrics.json", metrics)
    if not args.quiet:
        scores = metrics.get("scores")
        extra = "" if scores is None else (
            f": ACC {scores['acc']:.4f}  NMI {scores['nmi']:.4f}  ARI {scores['ari']:.4f}")
        print(f"graphclust train: {args.model} on {data_name} done{extra}; run folder {out}")

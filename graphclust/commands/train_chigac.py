"""``graphclust train-chigac`` and ``graphclust cluster-chigac``: train CHiGac, then cluster data sets.

``train-chigac`` trains the amortised model on generated CRP mixtures (the seed's generator,
``--dim`` dimensions) or on CRP episodes drawn from a labelled data set (``--data``), into a
run folder::

    config.json            settings (with the resolved lr drop step), episode source, versions
    checkpoints/           chigac_checkpoint.pt (training state, every --checkpoint-every
                           steps), model.safetensors (the final model)
    log.jsonl              one JSON line per training step (loss, bound terms, lr, seconds)
    metrics.json           final loss, wall time, and scores on --val-sets fresh episodes

``--resume`` continues from the last checkpoint and gives the same result as an
uninterrupted run (every step's randomness depends only on the seed and the step);
``--steps`` may be raised when resuming. An existing folder is never overwritten without
``--force``.

``cluster-chigac DATA --model RUN -o OUT`` clusters any data set (name or file) with a trained
model, building a kNN graph of it (or using ``--graph`` from ``graphclust build-graph``), into
a folder with the same outputs as ``graphclust train``::

    config.json       model file, data, settings; ``graph`` names the graph for inspection
    checkpoints/      graph.npz (the kNN graph used)
    labels.npy        (n,) int64 clusters; membership.npy (n,) float32 scores
    metrics.json      K_hat, capped/merged counts, ACC/NMI/ARI and K error with labels, times
    inspection.npz    proba (sequential memberships), embedding (encoder), learned affinity

This module registers both subcommands (``add_parser`` adds ``cluster-chigac`` next to
``train-chigac``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from graphclust.commands.runfolder import prepare_run_folder, write_jsonl
from graphclust.utils import (
    GraphclustError,
    prepare_output,
    versions,
    write_json,
)

#: settings that may change when a run is resumed
_RESUMABLE = {"steps", "device", "checkpoint_every", "val_sets", "val_n"}
CHECKPOINT = "chigac_checkpoint.pt"
MODEL_FILE = "model.safetensors"


# =========================================================================== parsers
def number_or_share(text: str) -> int | float:
    """``--min-cluster-size``: ``"5"`` -> 5 (points), ``"0.005"`` -> 0.005 (a share)."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or a number in (0, 1), got "
                                         f"{text!r}") from None


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "train-chigac",
        help="train CHiGac (amortised clustering, K inferred) on generated or labelled episodes",
        description=(
            "Train CHiGac on CRP mixtures of Gaussians (default, 2-D) or on CRP episodes drawn "
            "from a labelled data set (--data), into a resumable run folder. Cluster new data "
            "with `graphclust cluster-chigac DATA --model RUN -o OUT`."
        ),
    )
    p.add_argument("-o", "--output", required=True, help="run folder, e.g. runs/chigac-mog")
    p.add_argument("--data", default=None,
                   help="labelled data set (name or .npz/.npy/.csv with labels) to draw training "
                        "episodes from; default: generated mixtures")
    p.add_argument("--data-dir", default=None, help="folder with benchmark files")
    p.add_argument("--download", action="store_true", help="download a named data set when missing")
    p.add_argument("--max-samples", type=int, default=None, help="use only the first N rows of --data")
    g = p.add_argument_group("episodes")
    g.add_argument("--dim", type=int, default=2, help="dimension of generated mixtures (default 2)")
    g.add_argument("--n-min", type=int, default=50, help="smallest episode (default 50)")
    g.add_argument("--n-max", type=int, default=300, help="largest episode (default 300)")
    g.add_argument("--sigma-mu", type=float, default=10.0, help="spread of centres (default 10)")
    g.add_argument("--sigma", type=float, default=1.0, help="within-cluster std (default 1)")
    g.add_argument("--max-train-clusters", type=int, default=30,
                   help="reject generated episodes with more clusters (default 30)")
    g.add_argument("--n-neighbors", type=int, default=15, help="J of the kNN graphs (default 15)")
    m = p.add_argument_group("model")
    m.add_argument("--width", type=int, default=64, help="model width d (default 64)")
    m.add_argument("--heads", type=int, default=4, help="attention heads (default 4)")
    m.add_argument("--layers", type=int, default=2, help="encoder layers (default 2)")
    m.add_argument("--tokens", type=int, default=8, help="global tokens per graph (default 8)")
    m.add_argument("--latent-dim", type=int, default=32, help="cluster latent size (default 32)")
    m.add_argument("--hidden", type=int, default=128, help="MLP width (default 128)")
    m.add_argument("--dropout", type=float, default=0.1, help="dropout (default 0.1)")
    m.add_argument("--tau", type=float, default=0.1, help="initial anchor temperature (default 0.1)")
    m.add_argument("--repulsion", choices=("corrected", "literal", "off"), default="corrected",
                   help="anchor repulsion of eq. 3 (default corrected: per point)")
    m.add_argument("--lambda-rep", type=float, default=1.0, help="repulsion weight (default 1)")
    m.add_argument("--anchor-prior", choices=("learned", "uniform"), default="learned")
    m.add_argument("--z-samples", type=int, default=4, help="importance samples w (default 4)")
    m.add_argument("--anchor-samples", type=int, default=2, help="anchors R per step (default 2)")
    m.add_argument("--anchor-grad", choices=("rloo", "none", "gumbel"), default="rloo")
    m.add_argument("--eai-steps", type=int, default=1, help="EAI inner steps M (default 1)")
    m.add_argument("--eai-lr", type=float, default=0.1, help="EAI inner step size (default 0.1)")
    m.add_argument("--eai-weights", choices=("uniform", "learned"), default="uniform")
    m.add_argument("--kl-weight", type=float, default=1.0, help="weight of the anchor KL (default 1)")
    t = p.add_argument_group("training")
    t.add_argument("--steps", type=int, default=5000, help="optimiser steps (default 5000)")
    t.add_argument("--batch-size", type=int, default=8, help="episodes per step (default 8)")
    t.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate (default 1e-4)")
    t.add_argument("--weight-decay", type=float, default=1e-4, help="L2 (default 1e-4)")
    t.add_argument("--clip", type=float, default=10.0, help="gradient-norm clip (default 10)")
    t.add_argument("--lr-drop-step", type=int, default=None,
                   help="step from which lr is x0.1 (default: half of --steps, fixed at the start)")
    t.add_argument("--checkpoint-every", type=int, default=50, help="steps between checkpoints")
    t.add_argument("--val-sets", type=int, default=20,
                   help="fresh episodes scored at the end (default 20; 0: none)")
    t.add_argument("--val-n", type=int, default=200,
                   help="points per generated validation set (default 200)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the whole run (default 0)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    p.add_argument("--resume", action="store_true", help="continue the run in the output folder")
    p.add_argument("--force", action="store_true", help="delete an existing run folder and start over")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    _add_cluster_parser(sub)
    return p


def _add_cluster_parser(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser(
        "cluster-chigac",
        help="cluster a data set with a trained CHiGac model (no retraining)",
        description=(
            "Cluster DATA (a data set name or .npz/.npy/.csv file) with a CHiGac model trained by "
            "`graphclust train-chigac`; writes labels.npy, metrics.json and inspection.npz like "
            "`graphclust train`."
        ),
    )
    c.add_argument("data", help="dataset name or path to .npz / .npy / .csv")
    c.add_argument("--model", required=True,
                   help="run folder of `graphclust train-chigac` or its model.safetensors")
    c.add_argument("-o", "--output", required=True, help="output folder")
    c.add_argument("--graph", default=None,
                   help="kNN graph .npz of DATA from `graphclust build-graph` (default: build one)")
    c.add_argument("--n-neighbors", type=int, default=None,
                   help="J of the graph built for DATA (default: the model's)")
    c.add_argument("--knn-method", default="exact", help="kNN search method (default exact)")
    c.add_argument("--max-clusters", type=int, default=100, help="cap on K (default 100)")
    c.add_argument("--min-cluster-size", type=number_or_share, default=1,
                   help="merge smaller clusters into the nearest one: a number of points, or "
                        "a share of DATA's points such as 0.005 (default 1: off)")
    c.add_argument("--refine-steps", type=int, default=8,
                   help="posterior refinement passes of the membership decision per cluster "
                        "(default 8; 0: the prior mean only)")
    c.add_argument("--data-dir", default=None, help="folder with benchmark files")
    c.add_argument("--download", action="store_true", help="download a named data set when missing")
    c.add_argument("--max-samples", type=int, default=None, help="use only the first N rows")
    c.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    c.add_argument("--force", action="store_true", help="overwrite an existing output folder")
    c.add_argument("-q", "--quiet", action="store_true", help="no summary line")
    c.set_defaults(_run=run_cluster)


# =========================================================================== helpers
def _settings(args: argparse.Namespace) -> dict[str, Any]:
    keys = ("data", "max_samples", "dim", "n_min", "n_max", "sigma_mu", "sigma",
            "max_train_clusters", "n_neighbors", "width", "heads", "layers", "tokens",
            "latent_dim", "hidden", "dropout", "tau", "repulsion", "lambda_rep", "anchor_prior",
            "z_samples", "anchor_samples", "anchor_grad", "eai_steps", "eai_lr", "eai_weights",
            "kl_weight", "steps", "batch_size", "lr", "weight_decay", "clip", "lr_drop_step",
            "checkpoint_every", "val_sets", "val_n", "seed", "device")
    return {k: getattr(args, k) for k in keys}


def _estimator(args: argparse.Namespace, episodes, ckpt_dir: Path, resumed: bool):
    from graphclust.models.chigac_estimator import CHiGac

    return CHiGac(
        n_neighbors=args.n_neighbors, dim=args.width, heads=args.heads, n_layers=args.layers,
        n_tokens=args.tokens, latent_dim=args.latent_dim, hidden=args.hidden,
        dropout=args.dropout, tau=args.tau, repulsion=args.repulsion, lambda_rep=args.lambda_rep,
        anchor_prior=args.anchor_prior, n_z_samples=args.z_samples,
        n_anchor_samples=args.anchor_samples, anchor_grad=args.anchor_grad,
        eai_steps=args.eai_steps, eai_lr=args.eai_lr, eai_weights=args.eai_weights,
        kl_weight=args.kl_weight, n_steps=args.steps, batch_size=args.batch_size, lr=args.lr,
        weight_decay=args.weight_decay, clip=args.clip, lr_drop_step=args.lr_drop_step,
        n_range=(args.n_min, args.n_max), sigma_mu=args.sigma_mu, sigma=args.sigma,
        max_train_clusters=args.max_train_clusters, n_features=args.dim, episodes=episodes,
        checkpoint_dir=ckpt_dir, resume=resumed, device=args.device, random_state=args.seed,
        verbose=not args.quiet,
    )


def episode_scores(y_true: np.ndarray, y_pred: np.ndarray, batch: np.ndarray,
                   n_pred: np.ndarray) -> dict[str, float]:
    """Mean ARI / NMI / ACC and K error over the graphs of a batch."""
    from graphclust.metrics import score_clustering

    rows = []
    for b in range(n_pred.shape[0]):
        sel = batch == b
        k_true = int(np.unique(y_true[sel]).size)
        s = score_clustering(y_true[sel], y_pred[sel])
        rows.append((s.ari, s.nmi, s.acc, int(n_pred[b]) - k_true))
    arr = np.asarray(rows, dtype=np.float64)
    return {"ari": float(arr[:, 0].mean()), "nmi": float(arr[:, 1].mean()),
            "acc": float(arr[:, 2].mean()), "k_mae": float(np.abs(arr[:, 3]).mean()),
            "k_signed": float(arr[:, 3].mean()), "exact_k": float((arr[:, 3] == 0).mean()),
            "n_sets": int(arr.shape[0])}


# =========================================================================== train
def run(args: argparse.Namespace) -> int:
    import torch

    from graphclust.data.synthetic import LabelledEpisodes, MixtureEpisodes
    from graphclust.models.chigac import infer_clusters

    t_start = time.perf_counter()
    out = Path(args.output)
    for name in ("steps", "val_sets"):
        if getattr(args, name) < 0:
            raise GraphclustError(f"--{name.replace('_', '-')} must be >= 0")
    if out.exists() and not (args.resume or args.force):
        prepare_output(out, force=False, is_dir=True)  # raises: exists already

    old = None
    if args.resume and (out / "config.json").is_file():
        old = json.loads((out / "config.json").read_text())
        if args.lr_drop_step is None:
            args.lr_drop_step = old["settings"].get("lr_drop_step")
    if args.lr_drop_step is None:
        args.lr_drop_step = args.steps // 2

    # episodes (validated before any folder is touched)
    data_info = None
    if args.data is not None:
        from graphclust.data.loaders import load_dataset

        data = load_dataset(args.data, data_dir=args.data_dir, download=args.download,
                            max_samples=args.max_samples)
        if data.y is None:
            raise GraphclustError(
                f"{data.name} has no labels; episodes for training need labelled data "
                "(or leave out --data to train on generated mixtures)"
            )
        episodes = LabelledEpisodes(data.X, data.y, (args.n_min, args.n_max), args.n_neighbors)
        data_info = {"name": data.name, "source": data.source, "n_samples": int(data.X.shape[0]),
                     "n_features": int(data.X.shape[1])}
    else:
        episodes = MixtureEpisodes(dim=args.dim, n_range=(args.n_min, args.n_max),
                                   sigma_mu=args.sigma_mu, sigma=args.sigma,
                                   max_clusters=args.max_train_clusters,
                                   n_neighbors=args.n_neighbors)

    resumed = prepare_run_folder(out, args.resume, args.force)
    settings = _settings(args)
    config_path = out / "config.json"
    if resumed:
        old = old or json.loads(config_path.read_text())
        diff = sorted(k for k in set(old["settings"]) | set(settings)
                      if k not in _RESUMABLE and old["settings"].get(k) != settings.get(k))
        if diff:
            raise GraphclustError(
                f"cannot resume {out}: settings differ from the original run ({', '.join(diff)}); "
                "use the original settings, or --force to start over"
            )
    else:
        out.mkdir()
    ckpt_dir = out / "checkpoints"
    ckpt_dir.mkdir(exist_ok=True)
    config: dict[str, Any] = {
        "command": "train-chigac",
        "model": "chigac",
        "settings": settings,
        "episodes": episodes.describe(),
        "data": data_info,
        "versions": versions(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    write_json(config_path, config)

    log_path = out / "log.jsonl"
    state = {"first": True}

    def log_step(record: dict, history: list) -> None:
        if state["first"]:  # (re)write what the checkpoint holds, then append
            write_jsonl(log_path, history)
            state["first"] = False
        else:
            with open(log_path, "a") as fh:
                fh.write(json.dumps(record, sort_keys=True) + "\n")

    est = _estimator(args, episodes, ckpt_dir, resumed)
    t0 = time.perf_counter()
    est.fit(callbacks=[log_step])
    train_s = time.perf_counter() - t0
    write_jsonl(log_path, est.history_)
    est.save(ckpt_dir / MODEL_FILE)

    metrics: dict[str, Any] = {
        "model": "chigac",
        "steps": len(est.history_),
        "final_loss": est.history_[-1]["loss"] if est.history_ else None,
        "seed": args.seed,
        "resumed": resumed,
        "train_seconds": train_s,
    }
    if args.val_sets > 0:
        rng = np.random.default_rng([args.seed, 2**31])
        if args.data is None:
            val = MixtureEpisodes(dim=args.dim, n_range=(args.val_n, args.val_n),
                                  sigma_mu=args.sigma_mu, sigma=args.sigma,
                                  max_clusters=args.max_train_clusters,
                                  n_neighbors=min(args.n_neighbors, args.val_n - 1))
        else:
            val = episodes
        batch = val.sample(args.val_sets, rng).to(next(est.model_.parameters()).device)
        t0 = time.perf_counter()
        res = infer_clusters(est.model_, batch, est.max_clusters, est.min_cluster_size,
                             refine_steps=est.refine_steps)
        infer_s = time.perf_counter() - t0
        with torch.no_grad():
            val_scores = episode_scores(batch.y.cpu().numpy(), res.labels,
                                        batch.batch.cpu().numpy(), res.n_clusters)
        val_scores["seconds"] = infer_s
        metrics["validation"] = val_scores
    metrics["wall_time_s"] = time.perf_counter() - t_start
    config["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    write_json(config_path, config)
    write_json(out / "metrics.json", metrics)
    if not args.quiet:
        v = metrics.get("validation")
        extra = "" if v is None else (
            f"; validation ARI {v['ari']:.4f}, exact K {v['exact_k']:.2f}, K MAE {v['k_mae']:.2f}")
        print(f"graphclust train-chigac: {len(est.history_)} steps done{extra}; run folder {out}")
    return 0


# =========================================================================== cluster
def _model_path(spec: str) -> Path:
    p = Path(spec)
    if p.is_dir():
        cand = p / "checkpoints" / MODEL_FILE
        if not cand.is_file():
            raise GraphclustError(
                f"{p} has no checkpoints/{MODEL_FILE}; pass a finished `graphclust train-chigac` "
                "run folder or a model .safetensors file"
            )
        return cand
    if not p.is_file():
        raise GraphclustError(f"model {p} does not exist; pass a train-chigac run folder or file")
    return p


def run_cluster(args: argparse.Namespace) -> int:
    from graphclust.data.loaders import load_dataset
    from graphclust.graph.graph import KNNGraph, build_knn_graph, data_fingerprint
    from graphclust.graph.knn import check_k
    from graphclust.inspect.interface import inspection_arrays, save_inspection
    from graphclust.metrics import score_clustering
    from graphclust.models.chigac import check_min_cluster_size
    from graphclust.models.chigac_estimator import CHiGac

    t_start = time.perf_counter()
    out = Path(args.output)
    if out.exists() and not args.force:
        prepare_output(out, force=False, is_dir=True)  # raises: exists already
    for name, low in (("max_clusters", 1), ("refine_steps", 0)):
        if getattr(args, name) < low:
            raise GraphclustError(f"--{name.replace('_', '-')} must be >= {low}")
    check_min_cluster_size(args.min_cluster_size)
    model_file = _model_path(args.model)
    est = CHiGac.load(model_file, device=args.device)
    est.max_clusters = args.max_clusters
    est.min_cluster_size = args.min_cluster_size
    est.refine_steps = args.refine_steps
    est.knn_method = args.knn_method
    if args.n_neighbors is not None:
        est.n_neighbors = args.n_neighbors

    t0 = time.perf_counter()
    data = load_dataset(args.data, data_dir=args.data_dir, download=args.download,
                        max_samples=args.max_samples)
    load_s = time.perf_counter() - t0
    X, y = data.X, data.y
    if X.shape[1] != est.n_features_in_:
        raise GraphclustError(
            f"{data.name} has {X.shape[1]} features but the model was trained on "
            f"{est.n_features_in_}; embed the data to that dimension first"
        )
    t0 = time.perf_counter()
    if args.graph:
        graph = KNNGraph.load(args.graph)
        graph.check_matches(X)
    else:
        check_k(est.n_neighbors, X.shape[0])
        graph = build_knn_graph(X, k=est.n_neighbors, kernel="gaussian", method=args.knn_method,
                                device="cpu", labels=y,
                                meta={"data_fingerprint": data_fingerprint(X), "data": data.name,
                                      "built_by": "cluster-chigac"})
    graph_s = time.perf_counter() - t0

    if out.exists() and not (out.is_dir() and (out / "config.json").exists()
                             or out.is_dir() and not any(out.iterdir())):
        raise GraphclustError(
            f"{out} exists and is not a graphclust run folder (no config.json); refusing to "
            "overwrite it with --force; choose another -o"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_name(f".{out.name}.partial")
    if tmp_out.exists():
        shutil.rmtree(tmp_out)
    tmp_out.mkdir()
    try:
        t0 = time.perf_counter()
        result = est.cluster(X, graph=graph)
        cluster_s = time.perf_counter() - t0
        (tmp_out / "checkpoints").mkdir()
        graph.save(tmp_out / "checkpoints" / "graph.npz")
        with open(tmp_out / "labels.npy", "wb") as fh:
            np.save(fh, result.labels)
        with open(tmp_out / "membership.npy", "wb") as fh:
            np.save(fh, result.membership)
        save_inspection(tmp_out, inspection_arrays(est, X, graph=graph, y=y))
        k_hat = int(result.n_clusters[0])
        metrics: dict[str, Any] = {
            "model": "chigac",
            "model_file": str(model_file.resolve()),
            "data": data.name,
            "n_samples": int(X.shape[0]),
            "n_clusters": k_hat,
            "capped": bool(result.capped[0]),
            "n_merged": int(result.n_merged[0]),
            "n_steps": int(result.n_steps),
            "max_clusters": args.max_clusters,
            "min_cluster_size": args.min_cluster_size,
            "refine_steps": args.refine_steps,
            "stage_seconds": {"load": load_s, "graph": graph_s, "cluster": cluster_s},
            "seconds_per_1k": cluster_s / max(X.shape[0], 1) * 1000,
        }
        if y is not None:
            k_true = int(np.unique(y).size)
            metrics["scores"] = score_clustering(y, result.labels).as_dict()
            metrics["k_true"] = k_true
            metrics["k_error"] = k_hat - k_true
        config = {
            "command": "cluster-chigac",
            "model": "chigac",
            "model_file": str(model_file.resolve()),
            "settings": {"n_neighbors": est.n_neighbors, "knn_method": args.knn_method,
                         "max_clusters": args.max_clusters,
                         "min_cluster_size": args.min_cluster_size,
                         "refine_steps": args.refine_steps,
                         "max_samples": args.max_samples, "device": args.device,
                         "graph": args.graph},
            "n_clusters": k_hat,
            "data": {"name": data.name, "source": data.source, "n_samples": int(X.shape[0]),
                     "n_features": int(X.shape[1]), "has_labels": y is not None},
            "graph": "checkpoints/graph.npz",
            "versions": versions(),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        metrics["wall_time_s"] = time.perf_counter() - t_start
        write_json(tmp_out / "metrics.json", metrics)
        write_json(tmp_out / "config.json", config)
        if out.exists():  # --force, checked above: replace the old folder only now
            shutil.rmtree(out)
        tmp_out.rename(out)
    except BaseException:
        shutil.rmtree(tmp_out, ignore_errors=True)
        raise
    if not args.quiet:
        s = metrics.get("scores")
        extra = "" if s is None else (
            f": ACC {s['acc']:.4f}  NMI {s['nmi']:.4f}  ARI {s['ari']:.4f} (K true "
            f"{metrics['k_true']})")
        print(f"graphclust cluster-chigac: {data.name}, K = {k_hat}{extra}; folder {out}")
    return 0

"""Benchmark CHiGac (design note CHIGAC.md, section 8.3): B1 synthetic mixtures, B2 MNIST.

B1 (``b1``): the seed's CRP mixtures of 2-D Gaussians (alpha ~ Exp(1), sigma_mu = 10,
sigma = 1) at ``--sizes`` points (default 1k / 10k / 100k with 200 / 50 / 10 sets). Methods:

- ``chigac``: one model (trained here on N in ``--n-min..--n-max``, or loaded with ``--model``)
  clusters every set without knowing K;
- ``kmeans``: scikit-learn k-means given the true K (n_init = 10);
- ``dpgmm``: scikit-learn ``BayesianGaussianMixture`` with a Dirichlet-process prior and 50
  components (only up to ``--dpgmm-max-n`` points, default 10k);
- ``oracle``: MAP labels under the true parameters (the ceiling, no timing).

Reported per method and size: ARI, NMI, ACC (mean and std), K MAE, exact-K rate, signed K
error, seconds per set and per 1k points, and peak RSS of the method's block (Linux:
the peak is reset before each block through ``/proc/self/clear_refs``; elsewhere it is the
process peak so far).

S1 (``blobs``): the design note's slow check S1: sets of ``--blob-k`` blobs (default 3) whose
centres are at least ``--blob-separation`` sigma apart (default 15), ``--sizes`` points each
(default 300, 100 sets); CHiGac infers K, DP-GMM is the baseline that infers K too. Pass: K
exact in >= 95 of 100 sets and mean ARI >= 0.99.

Scaling (``scaling``): time of one inference step (default N = 1k to 100k) and of one
training step (loss and backward on one graph, up to ``--train-max-n``) against N, on
``--blob-k`` (default 10) separated blobs; reports seconds per step, the kNN-graph and
encoder times, peak RSS and the log-log slope of time against N (1 = linear). The encoder
is timed on its own before the inference loop (which encodes again), so the loop's time
per step excludes it.

B2 (``b2``): MNIST on Siamese embeddings (10-d, the DGG recipe): P1 meta-trains CHiGac on CRP
episodes drawn from the embedded MNIST-train (labels used), P2 trains it on 10-d mixtures
only (zero-shot); both cluster MNIST-test (10k) and all 70k; k-means with K = 10 on the same
embeddings is the baseline (DGG's reported ACC 97.58 is the anchor). Reports ACC, NMI, ARI,
K_hat, DBI (on the embeddings) and time. ``--umap-dim D`` first reduces the embeddings with
UMAP (no labels, fitted on every clustered row, as N2D does), so that a model trained on
D-dimensional mixtures can cluster them zero-shot (``--protocols p2 --model`` a D-d model, e.g.
the bundled 2-D one with ``--umap-dim 2``); ``--fine-tune-steps N`` with ``--model`` first
trains the loaded model on for N steps on each protocol's episodes (P1: labelled MNIST-train
episodes, starting from a model trained on mixtures); ``--save-embeddings`` keeps the Siamese
output for later runs (``--embeddings``).

Each result is one JSON file under ``--out`` (``scripts/_bench_common.write_result``).

Usage::

    python scripts/bench_chigac.py b1 --train-steps 5000                  # full B1 (slow)
    python scripts/bench_chigac.py b1 --model runs/chigac-mog            # B1 with a trained run
    python scripts/bench_chigac.py blobs --model runs/chigac-mog         # S1: 100 sets of 3 blobs
    python scripts/bench_chigac.py scaling --model runs/chigac-mog       # time per step vs N
    python scripts/bench_chigac.py b2 --data-dir ../shared/data --train-steps 5000 --save-model runs
    python scripts/bench_chigac.py b2 --embeddings mnist_siamese.npy --protocols p1   # stored embeddings
    python scripts/bench_chigac.py b1 --tiny --sizes 300 --n-sets 2 --train-steps 3   # smoke test
    python scripts/bench_chigac.py b2 --tiny --subsample 1200 --siamese-epochs 1 --train-steps 2
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench_common import command_line, peak_rss_mb, write_result

from graphclust.commands.train_chigac import number_or_share
from graphclust.metrics import score_clustering
from graphclust.models.chigac import check_min_cluster_size
from graphclust.utils import GraphclustError

#: per bench: default --sizes, --n-sets, --blob-k and --blob-separation (10 centres drawn
#: from N(0, 10^2 I) cannot be 15 sigma apart, so the scaling curve uses 6 sigma)
DEFAULTS = {"b1": ([1000, 10_000, 100_000], [200, 50, 10], None, None),
            "blobs": ([300], [100], 3, 15.0),
            "scaling": ([1000, 3000, 10_000, 30_000, 100_000], None, 10, 6.0)}

TINY_MODEL = {"dim": 8, "heads": 2, "n_layers": 1, "n_tokens": 2, "latent_dim": 4,
              "hidden": 16, "n_z_samples": 2, "batch_size": 2}


def reset_peak_rss() -> bool:
    """Reset Linux's peak-RSS counter (VmHWM) of this process; False where unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def summarise(rows: list[dict[str, float]]) -> dict[str, Any]:
    """Mean/std of the per-set scores plus K-error statistics."""
    arr = {k: np.array([r[k] for r in rows], dtype=np.float64) for k in rows[0]}
    out: dict[str, Any] = {"n_sets": len(rows)}
    for key in ("ari", "nmi", "acc"):
        out[key] = float(arr[key].mean())
        out[f"{key}_std"] = float(arr[key].std())
    if "k_err" in arr:
        out["k_mae"] = float(np.abs(arr["k_err"]).mean())
        out["k_signed"] = float(arr["k_err"].mean())
        out["exact_k"] = float((arr["k_err"] == 0).mean())
        out["k_true_mean"] = float(arr["k_true"].mean())
    if "seconds" in arr:
        out["seconds_per_set"] = float(arr["seconds"].mean())
        out["seconds_per_1k"] = float((arr["seconds"] / arr["n"] * 1000).mean())
    return out


def score_row(y, labels, seconds, n_true) -> dict[str, float]:
    s = score_clustering(y, labels)
    k_hat = int(np.unique(labels).size)
    return {"ari": s.ari, "nmi": s.nmi, "acc": s.acc, "k_err": k_hat - n_true,
            "k_true": n_true, "seconds": seconds, "n": len(y)}


def model_kwargs(args) -> dict[str, Any]:
    kw: dict[str, Any] = {"n_steps": args.train_steps, "n_range": (args.n_min, args.n_max),
                          "n_neighbors": args.n_neighbors, "random_state": args.seed,
                          "device": args.device, "verbose": not args.quiet,
                          "max_clusters": args.max_clusters, "lr": args.lr,
                          "lr_drop_step": args.lr_drop_step,
                          "min_cluster_size": args.min_cluster_size,
                          "refine_steps": args.refine_steps}
    if args.tiny:
        kw.update(TINY_MODEL)
    return kw


def chigac_name(args) -> str:
    """``chigac``, with ``-min5`` when clusters under 5 points are merged at inference,
    ``-refine2`` with two posterior refinement passes per cluster step, and ``-J30`` when
    ``--n-neighbors`` replaces a loaded model's own J; ``-rep-literal`` (or ``-rep-off``,
    ``-rep-corrected``) when ``--repulsion`` replaces a loaded model's anchor rule."""
    name = "chigac" if args.min_cluster_size == 1 else f"chigac-min{args.min_cluster_size:g}"
    name = name if not args.refine_steps else f"{name}-refine{args.refine_steps}"
    if args.model and getattr(args, "j_given", False):
        name = f"{name}-J{args.n_neighbors}"
    if args.model and getattr(args, "repulsion", None):
        name = f"{name}-rep-{args.repulsion}"
    return name


def get_model(args, dim: int, episodes=None):
    """A trained CHiGac: loaded from ``--model`` or trained here; returns (model, info)."""
    from graphclust.models.chigac_estimator import CHiGac

    if args.model:
        p = Path(args.model)
        path = p / "checkpoints" / "model.safetensors" if p.is_dir() else p
        est = CHiGac.load(path, device=args.device)
        if est.n_features != dim:
            raise SystemExit(f"--model {path} clusters {est.n_features}-d points, but this "
                             f"bench gives it {dim}-d ones")
        est.max_clusters = args.max_clusters
        est.min_cluster_size = args.min_cluster_size
        est.refine_steps = args.refine_steps
        if getattr(args, "j_given", False):
            est.n_neighbors = args.n_neighbors
        if args.repulsion is not None:
            # an inference-time switch: the anchor rule changes, the trained weights do not
            est.repulsion = args.repulsion
            est.model_.config = dataclasses.replace(est.model_.config, repulsion=args.repulsion)
        info = {"model_file": str(path), "train_seconds": None,
                "min_cluster_size": args.min_cluster_size, "refine_steps": args.refine_steps,
                "n_neighbors": int(est.n_neighbors),
                "repulsion": est.model_.config.repulsion,
                "repulsion_switched_at_inference": args.repulsion is not None}
        if args.fine_tune_steps and episodes is not None:
            # warm start: meta-train the loaded model on this protocol's episodes
            est.set_params(warm_start=True, episodes=episodes, n_steps=args.fine_tune_steps,
                           lr=args.lr, lr_drop_step=args.lr_drop_step, random_state=args.seed,
                           device=args.device, verbose=not args.quiet)
            t0 = time.perf_counter()
            est.fit()
            info.update({"fine_tune_steps": args.fine_tune_steps, "lr": args.lr,
                         "train_seconds": time.perf_counter() - t0,
                         "final_loss": est.history_[-1]["loss"] if est.history_ else None})
        return est, info
    est = CHiGac(n_features=dim, episodes=episodes, **model_kwargs(args))
    t0 = time.perf_counter()
    est.fit()
    info = {"train_steps": args.train_steps, "train_seconds": time.perf_counter() - t0,
            "final_loss": est.history_[-1]["loss"] if est.history_ else None, "lr": args.lr,
            "min_cluster_size": args.min_cluster_size, "refine_steps": args.refine_steps,
            "n_neighbors": args.n_neighbors}
    if args.save_model:
        name = "chigac" if episodes is None else f"chigac-{episodes.describe()['kind']}"
        path = Path(args.save_model) / f"{name}-d{dim}.safetensors"
        path.parent.mkdir(parents=True, exist_ok=True)
        est.save(path)
        info["model_file"] = str(path)
    return est, info


# =========================================================================== B1
def run_b1(args) -> list[Path]:
    from sklearn.cluster import KMeans

    from graphclust.data.synthetic import oracle_labels, sample_mixture

    est, info = get_model(args, 2)
    paths = []
    for n, n_sets in zip(args.sizes, args.n_sets):
        rng = np.random.default_rng([args.seed, n])
        sets = [sample_mixture(n, 2, rng, max_clusters=args.test_max_clusters)
                for _ in range(n_sets)]

        def chigac(s):
            return est.predict(s.x)

        def kmeans(s):
            return KMeans(s.n_clusters, n_init=10, random_state=args.seed).fit_predict(s.x)

        methods: dict[str, Callable] = {chigac_name(args): chigac, "kmeans": kmeans}
        if n <= args.dpgmm_max_n:
            methods["dpgmm"] = lambda s: _dpgmm(args).fit_predict(s.x)
        oracle = [score_clustering(s.y, oracle_labels(s)).ari for s in sets]
        for name, fn in selected(args, methods).items():
            metrics, wall = _score_sets(sets, fn)
            metrics.update({"n": n, "oracle_ari": float(np.mean(oracle))})
            if name.startswith("chigac"):
                metrics.update(info)
            paths.append(write_result(
                args.out, benchmark="chigac-b1", dataset=f"mog2d-n{n}", model=name,
                metrics=metrics, wall_s=wall, peak_rss_mb=peak_rss_mb(), command=command_line()))
            _print_row(args, f"B1 n={n:>6}", name, metrics)
    return paths


def selected(args, methods: dict[str, Callable]) -> dict[str, Callable]:
    """The methods named in ``--methods`` (``chigac`` covers ``chigac-min5`` etc.)."""
    if not args.methods:
        return methods
    return {k: v for k, v in methods.items() if k.split("-")[0] in args.methods}


def _dpgmm(args):
    """scikit-learn's Dirichlet-process GMM with 50 components (the K-inferring baseline)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import BayesianGaussianMixture

    warnings.filterwarnings("ignore", category=ConvergenceWarning)
    return BayesianGaussianMixture(
        n_components=50, weight_concentration_prior_type="dirichlet_process",
        max_iter=args.dpgmm_iter, random_state=args.seed)


def _score_sets(sets, fn: Callable) -> tuple[dict[str, Any], float]:
    """Cluster every set with ``fn`` and summarise; returns (metrics, wall seconds)."""
    reset = reset_peak_rss()
    rows = []
    t_block = time.perf_counter()
    for s in sets:
        t0 = time.perf_counter()
        labels = fn(s)
        rows.append(score_row(s.y, labels, time.perf_counter() - t0, s.n_clusters))
    wall = time.perf_counter() - t_block
    metrics = summarise(rows)
    metrics["peak_rss_reset"] = reset
    return metrics, wall


def _print_row(args, prefix: str, name: str, m: dict[str, Any]) -> None:
    if not args.quiet:
        oracle = f"  (oracle ARI {m['oracle_ari']:.3f})" if "oracle_ari" in m else ""
        print(f"{prefix} {name:>7}: ARI {m['ari']:.3f}  NMI {m['nmi']:.3f}  K-MAE "
              f"{m['k_mae']:.2f}  exact-K {m['exact_k']:.2f}  {m['seconds_per_set']:.2f} s/set"
              + oracle)


# =========================================================================== S1
def run_blobs(args) -> list[Path]:
    """S1: K inferred on well-separated blobs; CHiGac against the DP-GMM."""
    from graphclust.data.synthetic import sample_separated_mixture

    est, info = get_model(args, 2)
    paths = []
    for n, n_sets in zip(args.sizes, args.n_sets):
        rng = np.random.default_rng([args.seed, n, args.blob_k])
        sets = [sample_separated_mixture(n, args.blob_k, 2, rng,
                                         min_separation=args.blob_separation)
                for _ in range(n_sets)]
        methods: dict[str, Callable] = {chigac_name(args): lambda s: est.predict(s.x),
                                        "dpgmm": lambda s: _dpgmm(args).fit_predict(s.x)}
        for name, fn in selected(args, methods).items():
            metrics, wall = _score_sets(sets, fn)
            metrics.update({"n": n, "blob_k": args.blob_k,
                            "min_separation": args.blob_separation,
                            "pass_exact_k": metrics["exact_k"] >= 0.95,
                            "pass_ari": metrics["ari"] >= 0.99})
            if name.startswith("chigac"):
                metrics.update(info)
            paths.append(write_result(
                args.out, benchmark="chigac-s1",
                dataset=f"blobs{args.blob_k}-sep{args.blob_separation:g}-n{n}", model=name,
                metrics=metrics, wall_s=wall, peak_rss_mb=peak_rss_mb(), command=command_line()))
            _print_row(args, f"S1 n={n:>6}", name, metrics)
    return paths


# =========================================================================== scaling
def run_scaling(args) -> list[Path]:
    """Seconds per inference step and per training step against N (design note section 5)."""
    import torch

    from graphclust.data.synthetic import points_to_data, sample_separated_mixture
    from graphclust.models.chigac import infer_clusters

    est, info = get_model(args, 2)
    model = est.model_
    dev = next(model.parameters()).device
    rows = []
    for n in args.sizes:
        s = sample_separated_mixture(n, args.blob_k, 2, np.random.default_rng([args.seed, n]),
                                     min_separation=args.blob_separation)
        reset = reset_peak_rss()
        t0 = time.perf_counter()
        data = points_to_data(s.x, args.n_neighbors, y=s.y).to(dev)
        graph_s = time.perf_counter() - t0
        model.eval()
        with torch.no_grad():
            t0 = time.perf_counter()
            model.encode(data)
            encode_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        res = infer_clusters(model, data, args.max_clusters)
        infer_s = time.perf_counter() - t0
        loop_s = max(infer_s - encode_s, 0.0)
        infer_rss = peak_rss_mb()
        train_s = None
        if n <= args.train_max_n:
            # the teacher-forced loss keeps every step's activations for backward: memory grows
            # with N times K (about 6 GiB at N = 10k, K = 10), so large N is skipped
            model.train()
            gen = torch.Generator(device=dev).manual_seed(args.seed)
            t0 = time.perf_counter()
            terms = model.loss(data, generator=gen)
            terms.loss.backward()
            train_s = time.perf_counter() - t0
            model.zero_grad(set_to_none=True)
            del terms
        row = {"n": n, "k_true": args.blob_k, "k_hat": int(res.n_clusters[0]),
               "n_steps": int(res.n_steps), "graph_s": graph_s, "encode_s": encode_s,
               "infer_s": infer_s, "infer_s_per_step": loop_s / max(res.n_steps, 1),
               "train_step_s": train_s,
               "ari": score_clustering(s.y, res.labels).ari, "peak_rss_infer_mb": infer_rss,
               "peak_rss_train_mb": peak_rss_mb(), "peak_rss_reset": reset}
        rows.append(row)
        if not args.quiet:
            train = "skipped" if train_s is None else f"{train_s:.2f} s"
            print(f"scaling n={n:>7}: graph {graph_s:.2f} s  encode {encode_s:.2f} s  "
                  f"{row['infer_s_per_step']:.3f} s/inference step ({row['n_steps']} steps)  "
                  f"train step {train}  RSS {row['peak_rss_train_mb']:.0f} MiB")
    metrics: dict[str, Any] = {"blob_k": args.blob_k, "min_separation": args.blob_separation,
                               **info}
    for key in ("infer_s_per_step", "train_step_s", "encode_s"):
        pts = [(r["n"], r[key]) for r in rows if r[key] is not None]
        if len(pts) > 1:
            x = np.log([n for n, _ in pts])
            y = np.log([max(t, 1e-9) for _, t in pts])
            metrics[f"slope_{key}"] = float(np.polyfit(x, y, 1)[0])
    for key in rows[0]:
        metrics[key] = [r[key] for r in rows]
    path = write_result(args.out, benchmark="chigac-scaling", dataset=f"blobs{args.blob_k}",
                        model="chigac", metrics=metrics,
                        wall_s=sum(r["infer_s"] + (r["train_step_s"] or 0.0) for r in rows),
                        peak_rss_mb=peak_rss_mb(), command=command_line())
    return [path]


# =========================================================================== B2
def run_b2(args) -> list[Path]:
    from sklearn.cluster import KMeans
    from sklearn.metrics import davies_bouldin_score

    from graphclust.data.augment import default_augmenter
    from graphclust.data.loaders import load_dataset
    from graphclust.data.synthetic import LabelledEpisodes, MixtureEpisodes
    from siamese import KNNPairMiner, SiameseEmbedder

    data = load_dataset(args.data, data_dir=args.data_dir)
    X, y = data.X, data.y
    if X.shape[0] != 70_000:
        raise SystemExit(f"B2 expects all of MNIST (70,000 rows); {data.name} has {X.shape[0]}")
    train_idx, test_idx = np.arange(60_000), np.arange(60_000, 70_000)
    if args.subsample:
        train_idx = train_idx[: args.subsample]
        test_idx = test_idx[: max(args.subsample // 6, 50)]
    all_idx = np.concatenate([train_idx, test_idx])
    t0 = time.perf_counter()
    if args.embeddings:
        Z = np.load(args.embeddings).astype(np.float32, copy=False)
        if Z.ndim != 2 or Z.shape[0] != 70_000 or not np.isfinite(Z).all():
            raise SystemExit(f"--embeddings must hold a finite (70000, d) array, one row per "
                             f"MNIST image in the data set's order; got shape {Z.shape}")
        siamese_s = None
    else:
        emb = SiameseEmbedder(n_epochs=args.siamese_epochs, random_state=args.seed,
                              miner=KNNPairMiner(mutual=args.siamese_mutual),
                              augment=(default_augmenter(data.image_shape)
                                       if args.siamese_augment else None),
                              device=args.device, verbose=not args.quiet)
        Z = np.zeros((70_000, 10), dtype=np.float32)  # rows left out by --subsample stay 0
        Z[all_idx] = emb.fit_transform(X[all_idx])
        siamese_s = time.perf_counter() - t0
        if args.save_embeddings:
            from graphclust.utils import atomic_path

            with atomic_path(args.save_embeddings, suffix=".npy") as tmp:
                np.save(tmp, Z)
    umap_s = None
    if args.umap_dim:
        from graphclust.models.pretrain import umap_embed

        # unsupervised and transductive, as in N2D: one UMAP of every row that is clustered
        t0 = time.perf_counter()
        reduced = umap_embed(Z[all_idx], args.umap_dim, args.umap_neighbors, 0.0, args.seed)
        Z = np.zeros((70_000, args.umap_dim), dtype=np.float32)
        Z[all_idx] = reduced
        umap_s = time.perf_counter() - t0
    dim = Z.shape[1]
    space = "siamese-mutual" if args.siamese_mutual else "siamese"
    space = f"{space}-augment" if args.siamese_augment else space
    if args.embeddings:  # stored embeddings are named by their file
        space = Path(args.embeddings).stem
    space = space if not args.umap_dim else f"{space}-umap{args.umap_dim}"

    protocols = {}
    if "p1" in args.protocols:
        lo, hi = args.n_min, min(args.n_max, train_idx.size)
        episodes = LabelledEpisodes(Z[train_idx], y[train_idx], (lo, hi), args.n_neighbors)
        protocols["p1"] = get_model(args, dim, episodes)
    if "p2" in args.protocols:
        episodes = MixtureEpisodes(dim=dim, n_range=(args.n_min, args.n_max),
                                   max_clusters=args.test_max_clusters or 30,
                                   n_neighbors=args.n_neighbors)
        protocols["p2"] = get_model(args, dim, episodes)

    paths = []
    for split, idx in (("test", test_idx), ("all", all_idx)):
        Zs, ys = Z[idx], y[idx]
        runs: dict[str, Callable] = {
            "kmeans": lambda Zs=Zs: KMeans(10, n_init=10, random_state=args.seed).fit_predict(Zs)
        }
        for name, (est, _) in protocols.items():
            runs[f"chigac-{name}"] = lambda Zs=Zs, est=est: est.predict(Zs)
        for name, fn in runs.items():
            reset = reset_peak_rss()
            t0 = time.perf_counter()
            labels = fn()
            seconds = time.perf_counter() - t0
            s = score_clustering(ys, labels)
            k_hat = int(np.unique(labels).size)
            metrics: dict[str, Any] = {
                "acc": s.acc, "nmi": s.nmi, "ari": s.ari, "k_hat": k_hat, "k_true": 10,
                "dbi": float(davies_bouldin_score(Zs, labels)) if k_hat > 1 else None,
                "n": int(idx.size), "seconds": seconds, "siamese_seconds": siamese_s,
                "siamese_epochs": None if args.embeddings else args.siamese_epochs,
                "siamese_mutual": None if args.embeddings else args.siamese_mutual,
                "siamese_augment": None if args.embeddings else args.siamese_augment,
                "embeddings": args.embeddings, "umap_dim": args.umap_dim,
                "umap_neighbors": args.umap_neighbors if args.umap_dim else None,
                "umap_seconds": umap_s, "peak_rss_reset": reset,
                "dgg_reported_acc": 0.9758,
            }
            if name.startswith("chigac-"):
                metrics.update(protocols[name.split("-", 1)[1]][1])
            paths.append(write_result(
                args.out, benchmark="chigac-b2", dataset=f"mnist-{space}-{split}", model=name,
                metrics=metrics, wall_s=seconds, peak_rss_mb=peak_rss_mb(),
                command=command_line()))
            if not args.quiet:
                print(f"B2 {split:>4} {name:>10}: ACC {s.acc:.4f}  NMI {s.nmi:.4f}  ARI {s.ari:.4f}"
                      f"  K {k_hat}  {seconds:.1f} s")
    return paths


# =========================================================================== CLI
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bench", choices=("b1", "blobs", "scaling", "b2"))
    ap.add_argument("--model", default=None,
                    help="trained model (train-chigac run folder or .safetensors) instead of "
                         "training one here; b2: used for every protocol")
    ap.add_argument("--train-steps", type=int, default=5000, help="steps when training here")
    ap.add_argument("--fine-tune-steps", type=int, default=0,
                    help="b2 with --model: train the loaded model on for this many steps on "
                         "each protocol's episodes first (warm start; default 0: as loaded)")
    ap.add_argument("--n-min", type=int, default=50, help="smallest training episode")
    ap.add_argument("--n-max", type=int, default=300, help="largest training episode")
    ap.add_argument("--n-neighbors", type=int, default=None,
                    help="J (default 15 for b1, 20 for b2); with --model it replaces the "
                         "model's own J at inference")
    ap.add_argument("--repulsion", choices=("corrected", "literal", "off"), default=None,
                    help="with --model: replace the model's anchor repulsion rule at inference "
                         "(an ablation without retraining)")
    ap.add_argument("--max-clusters", type=int, default=100, help="K cap at inference")
    ap.add_argument("--min-cluster-size", type=number_or_share, default=None,
                    help="merge smaller clusters at inference: points, or a share of each "
                         "set's points such as 0.005 (default 1; b2: 5)")
    ap.add_argument("--refine-steps", type=int, default=8,
                    help="posterior refinement passes of the membership head per cluster step "
                         "at inference (default 8, as CHiGac; 0: the raw loop)")
    ap.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate when training")
    ap.add_argument("--lr-drop-step", type=int, default=None,
                    help="step from which lr is x0.1 (default: half of --train-steps)")
    ap.add_argument("--save-model", default=None,
                    help="folder to save each model trained here (.safetensors)")
    ap.add_argument("--test-max-clusters", type=int, default=None,
                    help="reject test mixtures with more clusters (default: no cap)")
    ap.add_argument("--sizes", type=int, nargs="+", default=None,
                    help="points per set (b1: 1k 10k 100k; blobs: 300; scaling: 1k .. 100k)")
    ap.add_argument("--n-sets", type=int, nargs="+", default=None,
                    help="sets per size (b1: 200 50 10; blobs: 100)")
    ap.add_argument("--methods", nargs="+", default=None, choices=("chigac", "kmeans", "dpgmm"),
                    help="b1/blobs: run only these methods (default all)")
    ap.add_argument("--blob-k", type=int, default=None,
                    help="clusters of the separated blobs (blobs: 3, scaling: 10)")
    ap.add_argument("--blob-separation", type=float, default=None,
                    help="smallest distance between blob centres, in sigma (blobs: 15, "
                         "scaling: 6)")
    ap.add_argument("--dpgmm-max-n", type=int, default=10_000)
    ap.add_argument("--train-max-n", type=int, default=10_000,
                    help="scaling: time a training step only up to this N (memory grows as N K)")
    ap.add_argument("--dpgmm-iter", type=int, default=200)
    ap.add_argument("--data", default="mnist")
    ap.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[1].parent
                                              / "shared" / "data"))
    ap.add_argument("--subsample", type=int, default=None,
                    help="b2: first N training rows (and N/6 test rows) only")
    ap.add_argument("--siamese-epochs", type=int, default=10)
    ap.add_argument("--siamese-mutual", action="store_true",
                    help="b2: only mutual raw-pixel neighbours as Siamese positives")
    ap.add_argument("--siamese-augment", action="store_true",
                    help="b2: shift and rotate both arms of every Siamese pair")
    ap.add_argument("--embeddings", default=None,
                    help="b2: a stored (70000, d) .npy of MNIST embeddings instead of "
                         "training the Siamese network here; results are named by its file "
                         "stem (mnist-STEM-test)")
    ap.add_argument("--save-embeddings", default=None,
                    help="b2: write the Siamese embeddings trained here to this .npy")
    ap.add_argument("--umap-dim", type=int, default=None,
                    help="b2: reduce the embeddings with UMAP to this many dimensions first "
                         "(fitted on every clustered row, no labels; needs umap-learn)")
    ap.add_argument("--umap-neighbors", type=int, default=20, help="b2: UMAP n_neighbors")
    ap.add_argument("--protocols", nargs="+", default=["p1", "p2"], choices=("p1", "p2"))
    ap.add_argument("--tiny", action="store_true", help="a miniature model (smoke tests)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=None, help="torch threads")
    ap.add_argument("--out", default="results")
    ap.add_argument("-q", "--quiet", action="store_true")
    args = ap.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    # a J given with --model replaces the model's own at inference (the J ablation)
    args.j_given = args.n_neighbors is not None
    if args.n_neighbors is None:
        args.n_neighbors = 20 if args.bench == "b2" else 15
    if args.n_neighbors < 1:
        raise SystemExit(f"--n-neighbors must be >= 1, got {args.n_neighbors}")
    if args.min_cluster_size is None:
        args.min_cluster_size = 5 if args.bench == "b2" else 1
    try:
        check_min_cluster_size(args.min_cluster_size)
    except GraphclustError as exc:
        raise SystemExit(f"--min-cluster-size: {exc}") from None
    sizes, n_sets, blob_k, separation = DEFAULTS.get(args.bench, (None, None, None, None))
    args.sizes = args.sizes or sizes
    args.n_sets = args.n_sets or n_sets or [1] * len(args.sizes or ())
    args.blob_k = args.blob_k or blob_k
    args.blob_separation = args.blob_separation or separation
    if args.sizes is not None and len(args.n_sets) != len(args.sizes):
        raise SystemExit("--n-sets needs one count per --sizes entry")
    if args.refine_steps < 0 or args.fine_tune_steps < 0:
        raise SystemExit("--refine-steps and --fine-tune-steps must be >= 0")
    if args.repulsion is not None and not args.model:
        raise SystemExit("--repulsion switches a loaded model's anchor rule; give --model "
                         "(a model trained here uses its training settings)")
    if args.fine_tune_steps and (args.bench != "b2" or not args.model):
        raise SystemExit("--fine-tune-steps trains a --model on b2's episodes; give both")
    for flag in ("siamese_mutual", "siamese_augment"):
        if getattr(args, flag) and (args.bench != "b2" or args.embeddings):
            raise SystemExit(f"--{flag.replace('_', '-')} trains b2's Siamese stage; it has no "
                             "effect with --embeddings or outside b2")
    if args.umap_dim is not None and (args.bench != "b2" or args.umap_dim < 2):
        raise SystemExit("--umap-dim is a b2 option and needs at least 2 dimensions")
    if args.bench == "blobs" and args.methods and "kmeans" in args.methods:
        raise SystemExit("blobs compares methods that infer K (chigac, dpgmm); k-means is not "
                         "one of them")
    run = {"b1": run_b1, "blobs": run_blobs, "scaling": run_scaling, "b2": run_b2}[args.bench]
    paths = run(args)
    if not args.quiet:
        print(f"wrote {len(paths)} result file(s) to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

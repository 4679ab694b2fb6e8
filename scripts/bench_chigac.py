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

B2 (``b2``): MNIST on Siamese embeddings (10-d, the DGG recipe): P1 meta-trains CHiGac on CRP
episodes drawn from the embedded MNIST-train (labels used), P2 trains it on 10-d mixtures
only (zero-shot); both cluster MNIST-test (10k) and all 70k; k-means with K = 10 on the same
embeddings is the baseline (DGG's reported ACC 97.58 is the anchor). Reports ACC, NMI, ARI,
K_hat, DBI (on the embeddings) and time.

Each result is one JSON file under ``--out`` (``scripts/_bench_common.write_result``).

Usage::

    python scripts/bench_chigac.py b1 --train-steps 5000                  # full B1 (slow)
    python scripts/bench_chigac.py b1 --model runs/chigac-mog            # B1 with a trained run
    python scripts/bench_chigac.py b2 --data-dir ../shared/data --train-steps 5000
    python scripts/bench_chigac.py b1 --tiny --sizes 300 --n-sets 2 --train-steps 3   # smoke test
    python scripts/bench_chigac.py b2 --tiny --subsample 1200 --siamese-epochs 1 --train-steps 2
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench_common import command_line, peak_rss_mb, write_result

from graphclust.metrics import score_clustering

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
                          "max_clusters": args.max_clusters}
    if args.tiny:
        kw.update(TINY_MODEL)
    return kw


def get_model(args, dim: int, episodes=None):
    """A trained CHiGac: loaded from ``--model`` or trained here; returns (model, info)."""
    from graphclust.models.chigac_estimator import CHiGac

    if args.model:
        p = Path(args.model)
        path = p / "checkpoints" / "model.safetensors" if p.is_dir() else p
        est = CHiGac.load(path, device=args.device)
        est.max_clusters = args.max_clusters
        return est, {"model_file": str(path), "train_seconds": None}
    est = CHiGac(n_features=dim, episodes=episodes, **model_kwargs(args))
    t0 = time.perf_counter()
    est.fit()
    return est, {"train_steps": args.train_steps, "train_seconds": time.perf_counter() - t0,
                 "final_loss": est.history_[-1]["loss"] if est.history_ else None}


# =========================================================================== B1
def run_b1(args) -> list[Path]:
    from sklearn.cluster import KMeans
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import BayesianGaussianMixture

    from graphclust.data.synthetic import oracle_labels, sample_mixture

    if len(args.n_sets) != len(args.sizes):
        raise SystemExit("--n-sets needs one count per --sizes entry")
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

        def dpgmm(s):
            warnings.filterwarnings("ignore", category=ConvergenceWarning)
            m = BayesianGaussianMixture(
                n_components=50, weight_concentration_prior_type="dirichlet_process",
                max_iter=args.dpgmm_iter, random_state=args.seed)
            return m.fit_predict(s.x)

        methods: dict[str, Callable] = {"chigac": chigac, "kmeans": kmeans}
        if n <= args.dpgmm_max_n:
            methods["dpgmm"] = dpgmm
        oracle = [score_clustering(s.y, oracle_labels(s)).ari for s in sets]
        for name, fn in methods.items():
            reset = reset_peak_rss()
            rows = []
            t_block = time.perf_counter()
            for s in sets:
                t0 = time.perf_counter()
                labels = fn(s)
                rows.append(score_row(s.y, labels, time.perf_counter() - t0, s.n_clusters))
            wall = time.perf_counter() - t_block
            metrics = summarise(rows)
            metrics.update({"n": n, "oracle_ari": float(np.mean(oracle)),
                            "peak_rss_reset": reset})
            if name == "chigac":
                metrics.update(info)
            paths.append(write_result(
                args.out, benchmark="chigac-b1", dataset=f"mog2d-n{n}", model=name,
                metrics=metrics, wall_s=wall, peak_rss_mb=peak_rss_mb(), command=command_line()))
            if not args.quiet:
                print(f"B1 n={n:>6} {name:>7}: ARI {metrics['ari']:.3f}  NMI {metrics['nmi']:.3f}"
                      f"  K-MAE {metrics['k_mae']:.2f}  exact-K {metrics['exact_k']:.2f}  "
                      f"{metrics['seconds_per_set']:.2f} s/set  (oracle ARI "
                      f"{metrics['oracle_ari']:.3f})")
    return paths


# =========================================================================== B2
def run_b2(args) -> list[Path]:
    from sklearn.cluster import KMeans
    from sklearn.metrics import davies_bouldin_score

    from graphclust.data.loaders import load_dataset
    from graphclust.data.synthetic import LabelledEpisodes, MixtureEpisodes
    from siamese import SiameseEmbedder

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
    emb = SiameseEmbedder(n_epochs=args.siamese_epochs, random_state=args.seed,
                          device=args.device, verbose=not args.quiet)
    Z = np.empty((70_000, 10), dtype=np.float32)
    Z[all_idx] = emb.fit_transform(X[all_idx])
    siamese_s = time.perf_counter() - t0

    protocols = {}
    if "p1" in args.protocols:
        lo, hi = args.n_min, min(args.n_max, train_idx.size)
        episodes = LabelledEpisodes(Z[train_idx], y[train_idx], (lo, hi), args.n_neighbors)
        protocols["p1"] = get_model(args, 10, episodes)
    if "p2" in args.protocols:
        episodes = MixtureEpisodes(dim=10, n_range=(args.n_min, args.n_max),
                                   max_clusters=args.test_max_clusters or 30,
                                   n_neighbors=args.n_neighbors)
        protocols["p2"] = get_model(args, 10, episodes)

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
                "siamese_epochs": args.siamese_epochs, "peak_rss_reset": reset,
                "dgg_reported_acc": 0.9758,
            }
            if name.startswith("chigac-"):
                metrics.update(protocols[name.split("-", 1)[1]][1])
            paths.append(write_result(
                args.out, benchmark="chigac-b2", dataset=f"mnist-siamese-{split}", model=name,
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
    ap.add_argument("bench", choices=("b1", "b2"))
    ap.add_argument("--model", default=None,
                    help="trained model (train-chigac run folder or .safetensors); b1 only")
    ap.add_argument("--train-steps", type=int, default=5000, help="steps when training here")
    ap.add_argument("--n-min", type=int, default=50, help="smallest training episode")
    ap.add_argument("--n-max", type=int, default=300, help="largest training episode")
    ap.add_argument("--n-neighbors", type=int, default=None,
                    help="J (default 15 for b1, 20 for b2)")
    ap.add_argument("--max-clusters", type=int, default=100, help="K cap at inference")
    ap.add_argument("--test-max-clusters", type=int, default=None,
                    help="reject test mixtures with more clusters (default: no cap)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000])
    ap.add_argument("--n-sets", type=int, nargs="+", default=[200, 50, 10])
    ap.add_argument("--dpgmm-max-n", type=int, default=10_000)
    ap.add_argument("--dpgmm-iter", type=int, default=200)
    ap.add_argument("--data", default="mnist")
    ap.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[1].parent
                                              / "shared" / "data"))
    ap.add_argument("--subsample", type=int, default=None,
                    help="b2: first N training rows (and N/6 test rows) only")
    ap.add_argument("--siamese-epochs", type=int, default=10)
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
    if args.n_neighbors is None:
        args.n_neighbors = 15 if args.bench == "b1" else 20
    paths = run_b1(args) if args.bench == "b1" else run_b2(args)
    if not args.quiet:
        print(f"wrote {len(paths)} result file(s) to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

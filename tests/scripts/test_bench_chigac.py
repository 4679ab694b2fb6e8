"""scripts/bench_chigac.py: tiny end-to-end runs of B1, S1 (blobs) and the scaling curve.

A miniature model is trained for a few steps inside each run, so the numbers are not
checked for quality; the tests check the result files (keys, ranges, one file per method
and size) and the K-error bookkeeping against a hand computation.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

BENCH_SCRIPT = "bench_chigac"  # loaded by the ``bench`` fixture (conftest.py)


def load(paths):
    return [json.loads(Path(p).read_text()) for p in paths]


def test_summarise_k_errors_by_hand(bench):
    rows = [bench.score_row(np.array([0, 0, 1, 1]), np.array([0, 0, 1, 2]), 0.5, 2),
            bench.score_row(np.array([0, 0, 1, 1]), np.array([1, 1, 0, 0]), 1.0, 2)]
    m = bench.summarise(rows)
    assert m["n_sets"] == 2
    assert m["k_mae"] == 0.5 and m["k_signed"] == 0.5 and m["exact_k"] == 0.5
    assert m["acc"] == pytest.approx((0.75 + 1.0) / 2)
    assert m["seconds_per_1k"] == pytest.approx((0.5 / 4 + 1.0 / 4) / 2 * 1000)


def test_blobs_and_b1_write_one_file_per_method(bench, tmp_path):
    common = ["--tiny", "--train-steps", "2", "--n-min", "30", "--n-max", "40", "-q",
              "--out", str(tmp_path), "--threads", "1", "--refine-steps", "0"]  # the raw loop
    saved = tmp_path / "models"
    assert bench.main(["blobs", "--sizes", "60", "--n-sets", "3", "--save-model", str(saved),
                       *common]) == 0
    assert (saved / "chigac-d2.safetensors").is_file()
    assert bench.main(["b1", "--sizes", "80", "--n-sets", "2", *common]) == 0
    assert bench.main(["blobs", "--sizes", "60", "--n-sets", "2", "--methods", "chigac",
                       "--min-cluster-size", "5", "--model", str(saved / "chigac-d2.safetensors"),
                       "--out", str(tmp_path / "merged"), "-q"]) == 0
    (merged,) = load((tmp_path / "merged").glob("*.json"))
    assert merged["model"] == "chigac-min5-refine8"  # the default refinement, named
    assert merged["metrics"]["min_cluster_size"] == 5 and merged["metrics"]["refine_steps"] == 8
    assert merged["metrics"]["n_neighbors"] == 15  # the model's own J
    assert merged["metrics"]["repulsion"] == "corrected"
    assert merged["metrics"]["repulsion_switched_at_inference"] is False
    # a J given with --model replaces the model's own at inference, and is named; a share of
    # each set's points as the merge threshold is named by its value
    assert bench.main(["blobs", "--sizes", "60", "--n-sets", "2", "--methods", "chigac",
                       "--n-neighbors", "7", "--min-cluster-size", "0.05", "--repulsion",
                       "literal", "--model", str(saved / "chigac-d2.safetensors"),
                       "--out", str(tmp_path / "j7"), "-q"]) == 0
    (j7,) = load((tmp_path / "j7").glob("*.json"))
    assert j7["model"] == "chigac-min0.05-refine8-J7-rep-literal"
    assert j7["metrics"]["repulsion"] == "literal"
    assert j7["metrics"]["repulsion_switched_at_inference"] is True
    assert j7["metrics"]["n_neighbors"] == 7 and j7["metrics"]["min_cluster_size"] == 0.05
    for bad in (["--n-neighbors", "0"], ["--min-cluster-size", "1.5"], ["--repulsion", "off"]):
        with pytest.raises(SystemExit):
            bench.main(["blobs", *bad, "--out", str(tmp_path / "bad")])
    assert not (tmp_path / "bad").exists()
    results = load(sorted(tmp_path.glob("*.json")))
    by = {(r["benchmark"], r["model"]): r for r in results}
    assert set(by) == {("chigac-s1", "chigac"), ("chigac-s1", "dpgmm"),
                       ("chigac-b1", "chigac"), ("chigac-b1", "kmeans"), ("chigac-b1", "dpgmm")}
    s1 = by["chigac-s1", "chigac"]
    assert s1["dataset"] == "blobs3-sep15-n60"
    m = s1["metrics"]
    assert m["n_sets"] == 3 and m["blob_k"] == 3 and m["train_steps"] == 2
    assert m["model_file"] == str(saved / "chigac-d2.safetensors") and m["min_cluster_size"] == 1
    assert 0.0 <= m["exact_k"] <= 1.0 and m["pass_exact_k"] == (m["exact_k"] >= 0.95)
    assert by["chigac-b1", "kmeans"]["metrics"]["exact_k"] == 1.0  # k-means is given K
    for r in results:
        assert r["wall_s"] > 0 and r["peak_rss_mb"] > 0 and "versions" in r


def test_scaling_curve_reports_slopes(bench, tmp_path):
    rc = bench.main(["scaling", "--tiny", "--train-steps", "1", "--n-min", "30",
                        "--n-max", "40", "--sizes", "100", "200", "400", "--blob-k", "4",
                        "--train-max-n", "200", "-q",
                        "--out", str(tmp_path), "--threads", "1"])
    assert rc == 0
    (r,) = load(tmp_path.glob("*.json"))
    m = r["metrics"]
    assert r["benchmark"] == "chigac-scaling" and m["n"] == [100, 200, 400]
    assert len(m["infer_s_per_step"]) == 3 and all(t > 0 for t in m["infer_s_per_step"])
    assert m["train_step_s"][2] is None and all(t > 0 for t in m["train_step_s"][:2])
    assert all(1 <= s <= 100 for s in m["n_steps"])
    for key in ("slope_infer_s_per_step", "slope_train_step_s", "slope_encode_s"):
        assert np.isfinite(m[key])


def test_sizes_and_set_counts_must_pair(bench, tmp_path):
    with pytest.raises(SystemExit, match="one count per --sizes"):
        bench.main(["blobs", "--tiny", "--sizes", "50", "60", "--n-sets", "3",
                    "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="--refine-steps and --fine-tune-steps must be >= 0"):
        bench.main(["blobs", "--tiny", "--refine-steps", "-1", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="k-means is not"):
        bench.main(["blobs", "--tiny", "--methods", "kmeans", "--out", str(tmp_path)])
    assert not list(tmp_path.iterdir())  # refused before anything was trained or written


@pytest.mark.shared_data
def test_b2_umap_reduction_saved_embeddings_and_model_dim_check(bench, tmp_path, shared_data_dir,
                                                                 fake_umap):
    """b2 on a slice of MNIST: Siamese output saved, a (stand-in) UMAP to 2-d, zero-shot P2."""
    seen = fake_umap(lambda Z: Z[:, :2] * 3.0)
    saved = tmp_path / "siamese.npy"
    common = ["--data-dir", str(shared_data_dir), "--subsample", "600", "--threads", "1", "-q"]
    assert bench.main(["b2", *common, "--siamese-epochs", "1", "--save-embeddings", str(saved),
                       "--siamese-augment", "--umap-dim", "2", "--umap-neighbors", "7", "--protocols", "p2", "--tiny",
                       "--train-steps", "2", "--n-min", "30", "--n-max", "40",
                       "--save-model", str(tmp_path / "m"), "--out", str(tmp_path / "r")]) == 0
    Z = np.load(saved)
    assert Z.shape == (70_000, 10) and np.isfinite(Z).all()
    assert np.abs(Z[:600]).sum(1).min() > 0 and not Z[600:60_000].any()  # only the rows used
    assert seen["n_components"] == 2 and seen["n_neighbors"] == 7 and seen["shape"][0] == 700
    results = {(r["dataset"], r["model"]): r for r in load((tmp_path / "r").glob("*.json"))}
    assert set(results) == {(f"mnist-siamese-augment-umap2-{split}", m)
                            for split in ("test", "all") for m in ("kmeans", "chigac-p2")}
    m = results["mnist-siamese-augment-umap2-test", "chigac-p2"]["metrics"]
    assert m["siamese_augment"] is True and m["umap_dim"] == 2 and m["umap_seconds"] > 0 and m["n"] == 100
    assert 0.0 <= m["acc"] <= 1.0 and m["k_hat"] >= 1
    # a stored model must fit the reduced dimension; a 2-d model on the 10-d embeddings is refused
    model = tmp_path / "m" / "chigac-mixture-d2.safetensors"
    with pytest.raises(SystemExit, match="clusters 2-d points"):
        bench.main(["b2", *common, "--embeddings", str(saved), "--protocols", "p2",
                    "--model", str(model),
                    "--out", str(tmp_path / "r2")])
    # P1 as a fine-tune of the stored 2-d model on labelled episodes of the reduced embeddings
    assert bench.main(["b2", *common, "--embeddings", str(saved), "--umap-dim", "2",
                       "--protocols", "p1", "--fine-tune-steps", "1", "--n-min", "30",
                       "--n-max", "40", "--model", str(model), "--out", str(tmp_path / "r4")]) == 0
    tuned = {(r["dataset"], r["model"]): r for r in load((tmp_path / "r4").glob("*.json"))}
    m = tuned["mnist-siamese-umap2-test", "chigac-p1"]["metrics"]
    assert m["fine_tune_steps"] == 1 and m["train_seconds"] > 0 and m["model_file"] == str(model)
    with pytest.raises(SystemExit, match="--fine-tune-steps trains a --model"):
        bench.main(["b2", *common, "--fine-tune-steps", "3", "--out", str(tmp_path / "r5")])
    with pytest.raises(SystemExit, match="--siamese-mutual trains b2's Siamese stage"):
        bench.main(["b2", *common, "--embeddings", str(saved), "--siamese-mutual",
                    "--out", str(tmp_path / "r6")])
    with pytest.raises(SystemExit, match="--siamese-augment trains b2's Siamese stage"):
        bench.main(["b1", "--siamese-augment", "--out", str(tmp_path / "r7")])
    with pytest.raises(SystemExit, match="--umap-dim is a b2 option"):
        bench.main(["blobs", "--umap-dim", "2", "--out", str(tmp_path / "r3")])

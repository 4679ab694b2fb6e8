"""scripts/bench_graph_quality.py: the pair-purity bookkeeping by hand, and a tiny end-to-end run."""

from __future__ import annotations

import json

import numpy as np
import pytest

BENCH_SCRIPT = "bench_graph_quality"  # loaded by the ``bench`` fixture (conftest.py)


def test_positive_pair_purity_by_hand(bench):
    # 1-NN lists: 0 -> 1, 1 -> 0, 2 -> 1, 3 -> 2; labels 0, 0, 1, 1.
    # Pairs (0,1) (1,0) (3,2) share a label, (2,1) does not: 3/4. Only 0 <-> 1 is mutual,
    # and both of its pairs share a label; 2 of the 4 points have a mutual neighbour.
    m = bench.positive_pair_purity(np.array([[1], [0], [1], [2]]), np.array([0, 0, 1, 1]))
    assert m == {"pair_purity_all": 0.75, "pair_purity_mutual": 1.0, "mutual_anchor_share": 0.5}


def test_knn_ceiling_only_on_the_mnist_split(bench):
    assert bench.knn_ceiling(np.zeros((100, 2)), np.zeros(100, dtype=int)) == {}
    # 70,000 rows: labels are the sign of the first coordinate, so 5-NN is exact
    rng = np.random.default_rng(0)
    Z = rng.normal(size=(70_000, 2)).astype(np.float32)
    Z[:, 0] += np.sign(Z[:, 0]) * 5
    y = (Z[:, 0] > 0).astype(int)
    assert bench.knn_ceiling(Z, y) == {"knn5_test_acc": 1.0}


def test_end_to_end_writes_one_file_per_space(bench, tmp_path, capsys):
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 40)
    X = (rng.normal(size=(120, 6)) + 8 * y[:, None]).astype(np.float32)
    np.savez(tmp_path / "blobs.npz", X=X, y=y)
    out = tmp_path / "r"
    assert bench.main(["--data", str(tmp_path / "blobs.npz"), "--siamese-epochs", "1",
                       "--skip-memory", "--out", str(out)]) == 0
    records = {json.loads(p.read_text())["model"]: json.loads(p.read_text())
               for p in out.glob("*.json")}
    assert sorted(records) == ["raw", "siamese", "siamese-augment", "siamese-mutual"]
    raw = records["raw"]["metrics"]
    assert raw["purity_at_10"] == 1.0 and raw["pair_purity_mutual"] == 1.0  # far-apart blobs
    mutual = records["siamese-mutual"]["metrics"]
    assert 0 < mutual["siamese_positive_anchors"] <= 120
    assert records["siamese"]["metrics"]["siamese_positive_anchors"] == 120
    augmented = records["siamese-augment"]["metrics"]
    assert augmented["siamese_positive_anchors"] == mutual["siamese_positive_anchors"]
    assert augmented["siamese_final_loss"] != mutual["siamese_final_loss"]
    assert "5-NN test ACC" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        bench.main(["--data", str(tmp_path / "blobs.npz"), "--spaces", "raw,bogus"])

"""scripts/bench_models.py: the table rebuilt from stored results (--from-results)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

BENCH_SCRIPT = "bench_models"  # loaded by the ``bench`` fixture (conftest.py)


def record(path: Path, model: str, graph: bool, seed: int, acc: float, date: str, wall=10.0,
           dataset="coil20", benchmark="models"):
    rec = {"benchmark": benchmark, "dataset": dataset, "model": model, "date": date,
           "wall_s": wall, "metrics": {"acc": acc, "nmi": acc / 2, "ari": acc / 4, "seed": seed,
                                       "graph_regularizer": graph}}
    name = f"models__{dataset}__{model.replace('+', '-')}__s{seed}__{date.replace(':', '')}.json"
    (path / name).write_text(json.dumps(rec))


def test_table_from_stored_results(bench, tmp_path):
    record(tmp_path, "vade", False, 0, 0.50, "2026-12-01T10:00:00")
    record(tmp_path, "vade", False, 1, 0.70, "2026-12-01T10:01:00")
    record(tmp_path, "dgg", True, 0, 0.60, "2026-12-01T10:02:00", wall=20.0)
    record(tmp_path, "dgg", True, 0, 0.64, "2026-12-01T11:00:00", wall=30.0)  # rerun wins
    record(tmp_path, "kdvae+graph", True, 0, 0.80, "2026-12-01T10:03:00")
    record(tmp_path, "vade", False, 0, 0.99, "2026-12-01T10:00:00", dataset="mnist")
    record(tmp_path, "vade", False, 2, 0.99, "2026-12-01T10:00:00", benchmark="other")

    runs = bench.collect_results(tmp_path, ["coil20"], ["vade", "kdvae"], (False, True))
    assert list(runs) == [("coil20", "vade", False), ("coil20", "vade", True),
                          ("coil20", "kdvae", True)]
    assert [r["acc"] for r in runs["coil20", "vade", False]] == [0.50, 0.70]
    assert runs["coil20", "vade", True] == [{"acc": 0.64, "nmi": 0.32, "ari": 0.16,
                                             "wall_s": 30.0, "seed": 0}]
    table = bench.format_table(runs).splitlines()
    # mean 60.00, sample std of (50, 70) = 14.14
    assert table[2] == ("| coil20 | VaDE | no | 2 | 60.00 ± 14.14 | 30.00 ± 7.07 | 15.00 ± 3.54 "
                        "| 10.00 ± 0.00 | – |")
    assert table[3].startswith("| coil20 | DGG | yes | 1 | 64.00 | 32.00 | 16.00 | 30.00 |")

    only_plain = bench.collect_results(tmp_path, ["coil20"], ["vade"], (False,))
    assert list(only_plain) == [("coil20", "vade", False)]
    out = tmp_path / "table.md"
    assert bench.main(["--from-results", "--datasets", "coil20", "--models", "vade",
                       "--out", str(tmp_path), "--table", str(out)]) == 0
    assert "| coil20 | DGG | yes | 1 | 64.00" in out.read_text()
    with pytest.raises(SystemExit, match="no models"):
        bench.main(["--from-results", "--datasets", "20news", "--out", str(tmp_path)])

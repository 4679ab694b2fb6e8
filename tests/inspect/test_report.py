"""Reports for a small graph and a small fake run; bad inputs fail and write nothing."""

import base64
import json
import re

import numpy as np
import pytest
import scipy.sparse as sp

from graphclust.cli import main
from graphclust.inspect import (
    cluster_affinity,
    load_inspection_input,
    save_inspection,
    write_report,
)
from graphclust.inspect import report as report_mod
from graphclust.metrics import purity_curve, score_clustering
from graphclust.utils import GraphclustError, write_json

GRAPH_PNGS = {"affinity.png", "cluster_affinity.png", "purity.png", "distributions.png",
              "ambiguous.png", "clusters.png", "map.png"}


def _strict_json(path):
    def no_nan(token):
        raise ValueError(f"non-standard JSON constant {token}")

    return json.loads(path.read_text(), parse_constant=no_nan)


def _check_report(out, pngs):
    files = {p.name for p in out.iterdir()}
    assert files == pngs | {"index.html", "summary.json"}
    page = (out / "index.html").read_text()
    assert "<script" not in page.lower()
    assert not re.search(r"(src|href)=\"(https?:)?//", page)  # nothing from the network
    embedded = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(embedded) == len(pngs)
    on_disk = {(out / name).read_bytes() for name in pngs}
    assert {base64.b64decode(b) for b in embedded} == on_disk
    assert all(b.startswith(b"\x89PNG") for b in on_disk)
    summary = _strict_json(out / "summary.json")
    assert sorted(summary["files"]) == sorted(files)
    return page, summary


def _no_leftovers(folder, expected):
    assert sorted(p.name for p in folder.iterdir()) == sorted(expected)


# --------------------------------------------------------------------------- good inputs
def test_graph_report(tmp_path, toy):
    inp = load_inspection_input(toy.graph)
    assert inp.kind == "graph" and inp.image_shape == (4, 4) and inp.X.shape == (60, 16)
    out = write_report(inp, tmp_path / "report", max_nodes=40)
    page, summary = _check_report(out, GRAPH_PNGS)
    _no_leftovers(tmp_path, ["report", "toy.npz", "toy_graph.config.json", "toy_graph.npz"])
    panels = summary["panels"]
    assert summary["input"]["kind"] == "graph" and summary["input"]["n_edges"] == 300
    # numbers behind the panels, recomputed
    C = cluster_affinity(inp.affinity, toy.y, 3)
    np.testing.assert_allclose(panels["cluster_affinity"]["matrix"], C, rtol=1e-5)
    graph_curve = next(v for k, v in panels["purity"]["curves"].items() if k.startswith("graph"))
    assert graph_curve == {str(k): pytest.approx(v) for k, v in
                           purity_curve(inp.graph.indices, toy.y).items()}
    assert len(panels["map"]["nodes"]) == 40
    blk = panels["affinity"]["ordered_by_label"]
    assert np.asarray(blk["matrix"]).shape == (60, 60) and blk["group_bounds"] == [0, 20, 40, 60]
    assert len(panels["ambiguous"]["nodes"]) == 20
    assert "Label x label affinity" in page


def test_run_report(tmp_path, run_dir, toy):
    inp = load_inspection_input(run_dir)
    assert inp.kind == "run" and inp.model == "dgg" and inp.n_clusters == 3
    assert inp.affinity_source.startswith("learned")
    out = write_report(inp, tmp_path / "report", n_blocks=7)
    _, summary = _check_report(out, GRAPH_PNGS | {"training.png"})
    panels = summary["panels"]
    expected = score_clustering(toy.y, inp.clusters).as_dict()
    assert panels["cluster_affinity"]["scores"] == pytest.approx(expected)
    conf = np.asarray(panels["cluster_affinity"]["confusion"]["matrix"])
    assert conf.sum() == 60 and np.trace(conf) == round(expected["acc"] * 60)
    assert np.asarray(panels["affinity"]["ordered_by_cluster"]["matrix"]).shape == (7, 7)
    assert "ordered_by_true_label" in panels["affinity"]
    assert set(panels["purity"]["curves"]) == {
        "graph, built in input space (all 60 nodes)", "input features (60 sampled nodes)",
        "learned embedding (60 sampled nodes)"}
    # nodes 25 and 50 were put confidently into the wrong cluster: the most ambiguous ones
    worst = panels["ambiguous"]["nodes"][:2]
    assert {rec["node"] for rec in worst} == {25, 50} and worst[1]["agreement"] < 0.5
    assert panels["training"]["loss"][0] == 10.0 and len(panels["training"]["acc"]) == 5
    sizes = [rec["size"] for rec in panels["clusters"]["clusters"]]
    assert sizes == np.bincount(inp.clusters).tolist()


def test_run_without_learned_affinity_uses_graph_weights(tmp_path, run_factory):
    run = run_factory(name="vade", affinity=False)
    inp = load_inspection_input(run)
    assert inp.affinity_source.startswith("kNN weights") and inp.notes
    out = write_report(inp, tmp_path / "r")
    assert (out / "index.html").is_file()


def test_graph_without_config_or_data(tmp_path, toy):
    (tmp_path / "toy_graph.config.json").unlink()
    inp = load_inspection_input(toy.graph)
    assert inp.X is None and inp.labels is not None and inp.notes
    out = write_report(inp, tmp_path / "r")
    pngs = {p.name for p in out.glob("*.png")}
    assert "map.png" not in pngs and "ambiguous.png" not in pngs and "affinity.png" in pngs


def test_cli_and_force(tmp_path, run_dir, capsys):
    out = tmp_path / "report"
    assert main(["inspect", str(run_dir), "-o", str(out), "-q"]) == 0
    assert "index.html" in capsys.readouterr().out
    (out / "marker.txt").write_text("old")
    assert main(["inspect", str(run_dir), "-o", str(out), "-q"]) == 2
    assert "exists already" in capsys.readouterr().err and (out / "marker.txt").exists()
    assert main(["inspect", str(run_dir), "-o", str(out), "-q", "--force"]) == 0
    assert not (out / "marker.txt").exists() and (out / "index.html").exists()
    _no_leftovers(tmp_path, ["report", "run", "toy.npz", "toy_graph.config.json",
                             "toy_graph.npz"])


# --------------------------------------------------------------------------- bad inputs
def _break(kind, tmp_path, toy, run_dir):
    """Make a bad input of ``kind``; returns (path, extra CLI args)."""
    if kind == "missing":
        return tmp_path / "nope.npz", []
    if kind == "text-file":
        (tmp_path / "notes.txt").write_text("hi")
        return tmp_path / "notes.txt", []
    if kind == "npz-not-graph":
        np.savez(tmp_path / "x.npz", X=np.zeros((3, 2)))
        return tmp_path / "x.npz", []
    if kind == "inspection-file":
        return run_dir / "inspection.npz", []
    if kind == "empty-folder":
        (tmp_path / "empty").mkdir()
        return tmp_path / "empty", []
    if kind == "no-checkpoints":
        for p in (run_dir / "checkpoints").iterdir():
            p.unlink()
        (run_dir / "checkpoints").rmdir()
        return run_dir, []
    if kind == "empty-checkpoints":
        for p in (run_dir / "checkpoints").iterdir():
            p.unlink()
        return run_dir, []
    if kind == "no-inspection":
        (run_dir / "inspection.npz").unlink()
        return run_dir, []
    if kind == "proba-rows":
        np.save(run_dir / "labels.npy", np.zeros(59, np.int64))
        return run_dir, []
    if kind == "run-data-rows":
        np.savez(tmp_path / "other.npz", X=np.zeros((50, 16), np.float32))
        return run_dir, ["--data", str(tmp_path / "other.npz")]
    if kind == "graph-data-rows":
        np.savez(tmp_path / "other.npz", X=np.zeros((61, 16), np.float32))
        return toy.graph, ["--data", str(tmp_path / "other.npz")]
    if kind == "graph-data-values":
        np.savez(tmp_path / "other.npz", X=np.ones((60, 16), np.float32))
        return toy.graph, ["--data", str(tmp_path / "other.npz")]
    if kind == "graph-config-data-gone":
        toy.data.unlink()
        return toy.graph, []
    if kind == "half-edges":
        arr = dict(np.load(run_dir / "inspection.npz"))
        del arr["edge_affinity"]
        np.savez(run_dir / "inspection.npz", **arr)
        return run_dir, []
    if kind == "bad-history":
        (run_dir / "history.jsonl").write_text('{"epoch": 0}\nnot json\n')
        return run_dir, []
    if kind == "graph-missing-no-affinity":
        arr = dict(np.load(run_dir / "inspection.npz"))
        del arr["edge_affinity"], arr["edge_index"]
        save_inspection(run_dir, arr)
        write_json(run_dir / "config.json", {"model": "vade", "data": {"name": "toy",
                   "source": str(toy.data)}, "n_clusters": 3, "graph": "gone.npz"})
        return run_dir, []
    if kind == "max-nodes":
        return run_dir, ["--max-nodes", "1"]
    raise AssertionError(kind)


BAD = {
    "missing": "does not exist",
    "text-file": "expected a graph .npz",
    "npz-not-graph": "not a graphclust graph",
    "inspection-file": "pass its run folder",
    "empty-folder": "not a run folder: found nothing",
    "no-checkpoints": "not a finished run",
    "empty-checkpoints": "not a finished run",
    "no-inspection": "has no inspection.npz",
    "proba-rows": "60 rows but the run has 59",
    "run-data-rows": "50 rows but the run",
    "graph-data-rows": "61 rows but the graph",
    "graph-data-values": "fingerprint",
    "graph-config-data-gone": "pass the data with --data",
    "half-edges": "come together",
    "bad-history": "line 2 is not JSON",
    "graph-missing-no-affinity": "no affinity to show",
    "max-nodes": "max_nodes must be",
}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_bad_inputs_raise_and_write_nothing(tmp_path, toy, run_dir, kind, capsys):
    path, extra = _break(kind, tmp_path, toy, run_dir)
    before = sorted(p.name for p in tmp_path.iterdir())
    out = tmp_path / "report"
    assert main(["inspect", str(path), "-o", str(out), "-q", *extra]) == 2
    err = capsys.readouterr().err
    assert BAD[kind] in err, err
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no temp folder either
    if kind not in ("max-nodes",):
        with pytest.raises(GraphclustError, match=re.escape(BAD[kind])):
            load_inspection_input(path, data=extra[1] if extra else None)


def test_failure_while_writing_leaves_nothing(tmp_path, run_dir, monkeypatch):
    inp = load_inspection_input(run_dir)

    def boom(ctx):
        raise RuntimeError("disk full")

    monkeypatch.setattr(report_mod, "PANELS", report_mod.PANELS[:2] + (boom,))
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(RuntimeError, match="disk full"):
        write_report(inp, tmp_path / "report")
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_report_input_validates_shapes():
    from graphclust.inspect import ReportInput

    A = sp.identity(3, format="csr")
    with pytest.raises(GraphclustError, match="clusters must have shape"):
        ReportInput(kind="run", name="x", affinity=A, affinity_source="", clusters=np.zeros(4, int))
    with pytest.raises(GraphclustError, match="scipy.sparse"):
        ReportInput(kind="run", name="x", affinity=np.eye(3), affinity_source="")

"""The HTML report: panels of numbers + figures, written into a folder all at once.

``write_report(inp, out_dir)`` computes every panel, writes one PNG per figure,
``summary.json`` (the numbers behind each panel) and a self-contained
``index.html`` (PNG images inlined as base64 data URIs, inline CSS, no script,
and a Content-Security-Policy that forbids any network access) into a temporary
folder beside ``out_dir``, then renames it onto ``out_dir``. On any error the
temporary folder is removed, so a failed report leaves nothing behind.
"""

from __future__ import annotations

import base64
import html
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from graphclust.inspect import figures as F
from graphclust.inspect import stats as S
from graphclust.inspect.inputs import Grouping, ReportInput
from graphclust.metrics import score_clustering
from graphclust.utils import (
    GraphclustError,
    check_random_state,
    prepare_output,
    versions,
)

__all__ = ["MAP_METHODS", "Panel", "build_panels", "check_report_options", "write_report"]

MAP_METHODS = ("pca", "umap")
_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


@dataclass
class Panel:
    """One section of the report.

    Attributes
    ----------
    key : str
        Identifier; also the stem of its PNG files and its key in ``summary.json``.
    title : str
    caption : str
        Plain text shown under the figures (what the panel shows and how to read it).
    figures : list of (file name, Figure)
    table : str
        Pre-rendered (escaped) HTML table, or ``""``.
    summary : dict
        The numbers behind the panel.
    """

    key: str
    title: str
    caption: str
    figures: list = field(default_factory=list)
    table: str = ""
    summary: dict = field(default_factory=dict)


@dataclass
class _Context:
    """Shared intermediate results of one report."""

    inp: ReportInput
    group: Grouping
    score: np.ndarray  # typicality of each node in its group (higher = more typical)
    label_codes: np.ndarray | None
    label_names: np.ndarray | None
    sample: np.ndarray  # subsample of node ids for kNN purity and the map
    n_blocks: int
    map_method: str
    n_ambiguous: int
    n_samples: int
    rng: np.random.Generator
    C: np.ndarray | None = None


# --------------------------------------------------------------------------- helpers
def _group_word(ctx: _Context) -> str:
    return ctx.group.kind


def _name(ctx: _Context, code: int) -> str:
    return str(ctx.group.names[code])


def _sig(a, digits: int = 6) -> Any:
    """Round an array to ``digits`` significant digits as nested lists (non-finite -> None)."""
    arr = np.asarray(a, dtype=np.float64)
    flat = [float(f"{v:.{digits}g}") if np.isfinite(v) else None for v in arr.ravel()]
    return np.array(flat, dtype=object).reshape(arr.shape).tolist() if arr.ndim > 1 else flat


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _dumps(obj: Any, level: int = 0) -> str:
    """JSON with one key per line but number lists on one line (matrices: a row per line)."""
    pad, close = "  " * (level + 1), "  " * level
    if isinstance(obj, dict):
        if not obj:
            return "{}"
        items = [f"{pad}{json.dumps(str(k))}: {_dumps(v, level + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + close + "}"
    if isinstance(obj, list) and obj and all(isinstance(v, (dict, list)) for v in obj):
        items = [pad + _dumps(v, level + 1) for v in obj]
        return "[\n" + ",\n".join(items) + "\n" + close + "]"
    return json.dumps(obj, allow_nan=False, separators=(", ", ": "))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _hist_dict(h: S.Histogram) -> dict:
    return {"counts": h.counts, "edges": _sig(h.edges)}


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, (float, np.floating)):
        return "-" if not np.isfinite(v) else f"{v:.4g}"
    return str(v)


# --------------------------------------------------------------------------- panels
def _panel_affinity(ctx: _Context) -> Panel:
    inp, g = ctx.inp, ctx.group
    kind = _group_word(ctx)
    blocks = [(f"ordered by {kind}", S.ordered_block_affinity(inp.affinity, g.codes, ctx.n_blocks,
                                                              score=ctx.score))]
    names, kinds = [g.names], [kind]
    if g.kind == "cluster" and ctx.label_codes is not None:
        blocks.append(("ordered by true label", S.ordered_block_affinity(
            inp.affinity, ctx.label_codes, ctx.n_blocks, secondary=g.codes, score=ctx.score)))
        names.append(ctx.label_names)
        kinds.append("label")
    fig = F.plot_block_affinity(blocks, names, kinds)
    summary: dict[str, Any] = {
        "matrix": inp.affinity_source,
        "definition": "M[a, b] = mean of A[i, j] over nodes i in row block a and j in column "
                      "block b of the ordered nodes",
        "n_blocks": int(blocks[0][1].matrix.shape[0]),
        "block_bounds": blocks[0][1].bounds,
    }
    for (title, blk), nm in zip(blocks, names):
        summary[title.replace(" ", "_")] = {
            "matrix": _sig(blk.matrix),
            "group_bounds": blk.group_bounds,
            "groups": [str(nm[i]) for i in blk.group_ids],
        }
    within = "decreasing confidence" if inp.confidence() is not None else \
        "decreasing weighted in-degree from the own group"
    caption = (
        f"A is the {inp.affinity_source}. Nodes are sorted by {kind} (within a {kind} by "
        f"{within}) and grouped into {summary['n_blocks']} consecutive blocks; each pixel is the "
        "mean of A over a block pair, so the picture stays readable for any N. Blue lines separate "
        f"{kind}s. Dark squares on the diagonal mean edges that stay inside a {kind}; dark pixels "
        "off the diagonal are edges between groups."
    )
    if len(blocks) > 1:
        caption += (" Right: the same matrix ordered by true label (and by cluster inside each "
                    "label), so a label split over two clusters shows as two sub-squares.")
    return Panel("affinity", "Affinity matrix", caption, [("affinity.png", fig)], "", summary)


def _panel_cluster_affinity(ctx: _Context) -> Panel:
    inp, g = ctx.inp, ctx.group
    kind = _group_word(ctx)
    C = S.cluster_affinity(inp.affinity, g.codes, len(g.names))
    ctx.C = C
    near = S.nearest_clusters(C)
    same = S.edge_groups(inp.affinity, g.codes)
    total = float(inp.affinity.data.sum())
    within_mass = float(inp.affinity.data[same].sum()) / total if total > 0 else float("nan")
    summary: dict[str, Any] = {
        "definition": f"C[a, b] = (sum of A[i, j] over i in {kind} a, j in {kind} b) / (|a| |b|)",
        "groups": [str(v) for v in g.names],
        "matrix": _sig(C),
        "nearest": [int(v) for v in near.cluster],
        "within_weight_fraction": within_mass,
    }
    conf = scores = None
    if g.kind == "cluster" and inp.labels is not None:
        conf = S.confusion(inp.clusters, inp.labels)
        scores = score_clustering(inp.labels, inp.clusters).as_dict()
        summary["confusion"] = {
            "matrix": conf.matrix, "clusters": conf.clusters, "classes": conf.classes,
            "mapping": {str(k): v for k, v in conf.mapping.items()},
        }
        summary["scores"] = scores
    fig = F.plot_cluster_affinity(C, [str(v) for v in g.names], conf, scores, kind)
    caption = (
        f"Left: C[a, b], the total affinity of the edges from members of {kind} a to members of "
        f"{kind} b divided by |a| |b| (the mean of A over that block of the full matrix). "
        f"{within_mass:.1%} of the edge weight stays inside a {kind}."
    )
    if conf is not None:
        caption += (
            " Right: counts of each predicted cluster (rows, in the order of their Hungarian-"
            "matched label) against the true labels; a perfect clustering is diagonal. "
            f"ACC {scores['acc']:.4f}, NMI {scores['nmi']:.4f}, ARI {scores['ari']:.4f}."
        )
    return Panel("cluster_affinity", f"{kind.capitalize()} x {kind} affinity", caption,
                 [("cluster_affinity.png", fig)], "", summary)


def _panel_purity(ctx: _Context) -> Panel:
    inp = ctx.inp
    if inp.labels is not None:
        ref, ref_name = inp.labels, "label"
    elif inp.clusters is not None:
        ref, ref_name = inp.clusters, "predicted cluster"
    else:
        return Panel("purity", "Neighbour purity",
                     "Skipped: neighbour purity needs labels or predicted clusters, and this "
                     "graph has neither.", summary={"skipped": "no labels"})
    curves: dict[str, dict[int, float]] = {}
    from graphclust.metrics import purity_curve

    if inp.graph is not None:
        space = inp.graph.meta.get("embedder")
        space = {"none": "input"}.get(space, space)
        name = (f"graph, built in {space} space (all {inp.n_nodes} nodes)" if space
                else f"graph (all {inp.n_nodes} nodes)")
        curves[name] = purity_curve(inp.graph.indices, ref)
    m = ctx.sample.size
    if inp.X is not None:
        curves[f"input features ({m} sampled nodes)"] = S.knn_purity_curve(inp.X[ctx.sample],
                                                                            ref[ctx.sample])
    if inp.embedding is not None:
        curves[f"learned embedding ({m} sampled nodes)"] = S.knn_purity_curve(
            inp.embedding[ctx.sample], ref[ctx.sample])
    if not curves:
        return Panel("purity", "Neighbour purity",
                     "Skipped: no graph, data or embedding to take neighbours in.",
                     summary={"skipped": "no space"})
    fig = F.plot_purity(curves, ref_name)
    caption = (
        f"Fraction of the k nearest neighbours that share the node's {ref_name}, for growing k. "
        "The graph curve uses the stored neighbour lists of all nodes; the input and embedding "
        f"curves use exact kNN among {m} randomly sampled nodes (sparser than the full data, so "
        "compare them with each other rather than with the graph curve)."
    )
    return Panel("purity", "Neighbour purity", caption, [("purity.png", fig)], "",
                 {"reference": ref_name, "subsample": m, "curves": curves})


def _panel_distributions(ctx: _Context) -> Panel:
    inp = ctx.inp
    kind = _group_word(ctx)
    A = inp.affinity
    deg = S.in_degree(A)
    lo, hi = int(deg.min()), int(deg.max())
    if hi - lo <= 80:
        edges = np.arange(lo, hi + 2) - 0.5
        counts, _ = np.histogram(deg, edges)
        deg_hist = S.Histogram(counts.astype(np.int64), edges)
    else:
        deg_hist = S.histogram(deg, bins=60)
    same = S.edge_groups(A, ctx.group.codes)
    all_h = S.histogram(A.data, bins=50)
    weight_hists = {
        f"inside a {kind}": S.Histogram(np.histogram(A.data[same], all_h.edges)[0], all_h.edges),
        f"between {kind}s": S.Histogram(np.histogram(A.data[~same], all_h.edges)[0], all_h.edges),
    }
    learned = inp.kind != "graph" and inp.affinity_source.startswith("learned")
    wlabel = "learned affinity per edge" if learned else "kNN edge weight"
    extra = None
    if learned and inp.graph is not None:
        extra = ("kNN weight of the graph", S.histogram(inp.graph.weights, bins=50))
    fig = F.plot_distributions(deg_hist, weight_hists, wlabel, extra)
    hubs = np.argsort(-deg, kind="stable")[:5]
    summary = {
        "in_degree": {"min": lo, "max": hi, "mean": float(deg.mean()),
                      "median": float(np.median(deg)), "never_a_neighbour": int((deg == 0).sum()),
                      "top_hubs": [{"node": int(i), "in_degree": int(deg[i])} for i in hubs],
                      "histogram": _hist_dict(deg_hist)},
        "weights": {k: _hist_dict(h) for k, h in weight_hists.items()},
        "edges_inside_fraction": float(same.mean()) if same.size else None,
    }
    if extra is not None:
        summary["graph_weights"] = _hist_dict(extra[1])
    caption = (
        f"Left: how often each node is someone's neighbour (in-degree; the out-degree is fixed "
        f"by k). A long right tail means hubs: {summary['in_degree']['never_a_neighbour']} "
        f"node(s) are nobody's neighbour, the largest hub is node {int(hubs[0])} with in-degree "
        f"{hi}. Middle: the {wlabel} of edges inside a {kind} and between {kind}s "
        f"({summary['edges_inside_fraction']:.1%} of the edges are inside)."
    )
    if extra is not None:
        caption += " Right: the input graph's kNN weights on the same edges."
    return Panel("distributions", "Degree and edge-weight distributions", caption,
                 [("distributions.png", fig)], "", summary)


def _panel_ambiguous(ctx: _Context) -> Panel:
    inp, g = ctx.inp, ctx.group
    kind = _group_word(ctx)
    if inp.proba is not None:
        agreement = S.posterior_agreement(inp.affinity, inp.proba)
        definition = ("mean over the node's neighbours j of sum_k gamma_ik gamma_jk (the chance "
                      "that the node and a random neighbour fall into the same cluster)")
    else:
        agreement = S.neighbor_agreement(inp.affinity, g.codes)
        definition = (f"fraction of the node's neighbours in its own {kind} (1 - the fraction "
                      f"in another {kind})")
    amb = S.ambiguous_nodes(agreement, ctx.n_ambiguous)
    rows, records = [], []
    conf = inp.confidence()
    for rank, (node, score) in enumerate(zip(amb.nodes, amb.scores), 1):
        rec: dict[str, Any] = {"rank": rank, "node": int(node), kind: _name(ctx, g.codes[node])}
        if g.kind != "label":
            rec["label"] = None if inp.labels is None else int(inp.labels[node])
        rec["agreement"] = float(score)
        if conf is not None:
            second = np.argsort(-inp.proba[node], kind="stable")[:2]
            rec["confidence"] = float(conf[node])
            rec["runner_up"] = int(second[1]) if second.size > 1 else None
        records.append(rec)
        rows.append(list(rec.values()))
    header = list(records[0].keys()) if records else ["rank", "node", kind, "agreement"]
    figs = []
    if inp.X is not None and inp.image_shape is not None and amb.nodes.size:
        per_row = 10
        chunks = [amb.nodes[i : i + per_row] for i in range(0, amb.nodes.size, per_row)]
        show_y = inp.labels is not None and g.kind != "label"
        tiles = [[f"#{int(n)} {kind[0]}{_name(ctx, g.codes[n])}"
                  + (f" y{int(inp.labels[n])}" if show_y else "") for n in ch] for ch in chunks]
        row_titles = [f"rank {i * per_row + 1}-{i * per_row + len(ch)}"
                      for i, ch in enumerate(chunks)]
        figs.append(("ambiguous.png", F.plot_samples(
            inp.X, inp.image_shape, chunks, row_titles, tile_titles=tiles)))
    finite = agreement[np.isfinite(agreement)]
    summary = {"definition": definition, "mean_agreement": float(finite.mean()) if finite.size
               else None, "nodes": records}
    caption = (f"Agreement of a node with its neighbours: {definition}. The table lists the "
               f"{len(records)} nodes of lowest agreement (mean over all nodes: "
               f"{_fmt(summary['mean_agreement'])}): candidates for label noise, boundary points "
               "or wrong edges.")
    if figs:
        caption += (f" The images show them in the same order, titled #node, {kind[0]} + "
                    f"{kind}" + (", y + true label." if g.kind == "cluster" and
                                 inp.labels is not None else "."))
    return Panel("ambiguous", "Most ambiguous nodes", caption, figs, _table(header, rows), summary)


def _panel_clusters(ctx: _Context) -> Panel:
    inp, g = ctx.inp, ctx.group
    kind = _group_word(ctx)
    k = len(g.names)
    sizes = np.bincount(g.codes, minlength=k)
    C = ctx.C if ctx.C is not None else S.cluster_affinity(inp.affinity, g.codes, k)
    near = S.nearest_clusters(C)
    if inp.proba is not None and g.kind == "cluster":
        reps = []
        for c in range(k):
            members = np.flatnonzero(g.codes == c)
            order = np.lexsort((members, -inp.proba[members, c]))
            reps.append(members[order][: ctx.n_samples])
        rank_by = "highest soft assignment to the cluster"
    else:
        reps = S.representatives(g.codes, ctx.score, ctx.n_samples, k)
        rank_by = f"highest weighted in-degree from their own {kind}"
    conf = inp.confidence()
    records, rows = [], []
    for c in range(k):
        rec: dict[str, Any] = {kind: str(g.names[c]), "size": int(sizes[c]),
                               "share_%": round(100.0 * sizes[c] / max(inp.n_nodes, 1), 2)}
        members = g.codes == c
        if inp.labels is not None and g.kind != "label" and sizes[c]:
            vals, cnt = np.unique(inp.labels[members], return_counts=True)
            rec["majority_label"] = int(vals[np.argmax(cnt)])
            rec["label_purity"] = float(cnt.max() / sizes[c])
        if conf is not None and sizes[c]:
            rec["mean_confidence"] = float(conf[members].mean())
        rec["self_affinity"] = float(C[c, c])
        rec["nearest_other"] = None if near.cluster[c] < 0 else str(g.names[near.cluster[c]])
        rec["nearest_affinity"] = float(near.affinity[c])
        records.append(rec)
    header = list(dict.fromkeys(key for rec in records for key in rec))
    rows = [[rec.get(h) for h in header] for rec in records]
    for rec, r in zip(records, reps):
        rec["representatives"] = [int(v) for v in r]
    figs = []
    titles = [f"{kind} {g.names[c]}\nn={sizes[c]}" for c in range(k)]
    if inp.X is not None and inp.image_shape is not None:
        figs.append(("clusters.png", F.plot_samples(inp.X, inp.image_shape, reps, titles)))
        shown = f"its {ctx.n_samples} members of {rank_by}, as images"
    elif inp.X is not None:
        top = S.top_features(inp.X, g.codes, 10, k)
        for rec, f, d in zip(records, top.features, top.differences):
            rec["top_features"] = [{"feature": int(a), "difference": float(b)}
                                   for a, b in zip(f, d)]
        flat_titles = [t.replace("\n", ", ") for t in titles]
        figs.append(("clusters.png", F.plot_top_features(top, flat_titles)))
        shown = ("the 10 features whose mean in the group exceeds the overall mean the most "
                 f"(representatives: the members of {rank_by}, listed in summary.json)")
    else:
        shown = f"no data to show (representatives, the members of {rank_by}, are in summary.json)"
    caption = (
        f"One row per {kind}: size, share of all nodes"
        + (", majority true label and its share" if "label_purity" in header else "")
        + (", mean confidence" if conf is not None else "")
        + f", self-affinity C[a, a] and the nearest other {kind} (highest (C[a, b] + C[b, a]) / 2)."
        + f" The figure shows for each {kind} {shown}."
    )
    return Panel("clusters", f"Per {kind}", caption, figs, _table(header, rows),
                 {"rank_by": rank_by, kind + "s": records})


def _panel_map(ctx: _Context) -> Panel:
    inp, g = ctx.inp, ctx.group
    if inp.embedding is not None:
        space, where = inp.embedding, "learned embedding"
    elif inp.X is not None:
        space, where = inp.X, "input features"
    else:
        return Panel("map", "2-D map", "Skipped: no embedding and no data to map.",
                     summary={"skipped": "no space"})
    idx = ctx.sample
    coords, info = S.map_2d(space[idx], ctx.map_method, ctx.rng)
    colorings = {f"coloured by {g.kind}": (g.codes[idx], g.names)}
    if g.kind == "cluster" and ctx.label_codes is not None:
        colorings["coloured by true label"] = (ctx.label_codes[idx], ctx.label_names)
    fig = F.plot_map(coords, colorings, info["method"].split()[0].upper())
    extra = ""
    if "explained_variance_ratio" in info:
        extra = (" The two axes explain "
                 f"{sum(info['explained_variance_ratio']):.1%} of the variance.")
    caption = (f"{info['method'].upper()} of the {where} of {idx.size} "
               f"{'randomly sampled ' if idx.size < inp.n_nodes else ''}nodes, one dot per node."
               + extra)
    summary = dict(info, space=where, nodes=idx, coords=_sig(coords, 5))
    return Panel("map", "2-D map", caption, [("map.png", fig)], "", summary)


def _panel_training(ctx: _Context) -> Panel | None:
    hist = ctx.inp.history
    if not hist:
        return None
    fig = F.plot_training(hist)
    keys = [k for k in ("loss", "acc", "nmi", "ari") if any(k in r for r in hist)]
    series = {k: [r.get(k) for r in hist] for k in keys}
    series["epoch"] = [r.get("epoch", i) for i, r in enumerate(hist)]
    caption = (f"Per-epoch records of training ({len(hist)} epochs): the loss"
               + (" and ACC/NMI/ARI against the true labels" if len(keys) > 1 else "") + ".")
    return Panel("training", "Training curves", caption, [("training.png", fig)], "", series)


PANELS: tuple[Callable[[_Context], Panel | None], ...] = (
    _panel_affinity, _panel_cluster_affinity, _panel_purity, _panel_distributions,
    _panel_ambiguous, _panel_clusters, _panel_map, _panel_training,
)


# --------------------------------------------------------------------------- assembly
def check_report_options(max_nodes, n_blocks, map_method, n_ambiguous, n_samples) -> None:
    for name, v, lo in (("max_nodes", max_nodes, 3), ("n_blocks", n_blocks, 1),
                        ("n_ambiguous", n_ambiguous, 0), ("n_samples", n_samples, 1)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise GraphclustError(f"{name} must be an integer >= {lo}, got {v!r}")
    if map_method not in MAP_METHODS:
        raise GraphclustError(f"unknown map method {map_method!r}; expected one of {MAP_METHODS}")
    if map_method == "umap":
        try:
            import umap  # noqa: F401
        except ImportError as exc:
            raise GraphclustError(
                "--map umap needs umap-learn, which is not installed: `pip install umap-learn` "
                "(or use --map pca)"
            ) from exc


def _context(inp: ReportInput, max_nodes: int, n_blocks: int, map_method: str,
             n_ambiguous: int, n_samples: int, random_state) -> _Context:
    check_report_options(max_nodes, n_blocks, map_method, n_ambiguous, n_samples)
    rng = check_random_state(random_state)
    group = inp.grouping()
    score = inp.confidence()
    if score is None:
        score = S.group_strength(inp.affinity, group.codes)
    label_codes = label_names = None
    if inp.labels is not None:
        label_codes, label_names = S.encode_groups(inp.labels)
    return _Context(inp, group, score, label_codes, label_names,
                    S.subsample(inp.n_nodes, int(max_nodes), rng), int(n_blocks), map_method,
                    int(n_ambiguous), int(n_samples), rng)


def _run_panels(ctx: _Context, progress: bool, on_panel: Callable[[Panel], None] | None = None):
    """Make every panel (tqdm bar over them); ``on_panel`` runs inside the bar (e.g. rendering)."""
    from tqdm.auto import tqdm

    panels, seconds = [], {}
    bar = tqdm(PANELS, desc="inspect", unit="panel", disable=not progress, leave=False)
    for make in bar:
        key = make.__name__.removeprefix("_panel_")
        bar.set_postfix_str(key)
        t0 = time.perf_counter()
        panel = make(ctx)
        if panel is not None:
            if on_panel is not None:
                on_panel(panel)
            panels.append(panel)
        seconds[key] = time.perf_counter() - t0
    bar.close()
    return panels, seconds


def build_panels(inp: ReportInput, *, max_nodes: int = 5000, n_blocks: int = 200,
                 map_method: str = "pca", n_ambiguous: int = 20, n_samples: int = 8,
                 random_state=0, progress: bool = False) -> list[Panel]:
    """Compute every panel in memory, figures included (for notebooks); see :func:`write_report`."""
    ctx = _context(inp, max_nodes, n_blocks, map_method, n_ambiguous, n_samples, random_state)
    return _run_panels(ctx, progress)[0]


def _input_summary(inp: ReportInput) -> dict[str, Any]:
    out: dict[str, Any] = {
        "kind": inp.kind, "path": str(inp.path) if inp.path else None, "data": inp.name,
        "model": inp.model, "n_nodes": inp.n_nodes, "n_edges": int(inp.affinity.nnz),
        "affinity": inp.affinity_source, "n_clusters": inp.n_clusters,
        "has_labels": inp.labels is not None, "has_data": inp.X is not None,
        "image_shape": list(inp.image_shape) if inp.image_shape else None,
        "notes": list(inp.notes),
    }
    if inp.graph is not None:
        out["graph"] = {"k": inp.graph.k, "kernel": inp.graph.meta.get("kernel"),
                        "embedder": inp.graph.meta.get("embedder")}
    if inp.metrics:
        out["metrics"] = inp.metrics
    return out


_CSS = """
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:0;color:#222;
background:#f6f7f9;line-height:1.45}
header{background:#24364f;color:#fff;padding:18px 32px}
header h1{margin:0 0 4px;font-size:22px} header p{margin:0;opacity:.85;font-size:14px}
main{max-width:1320px;margin:0 auto;padding:16px 32px 48px}
nav{font-size:14px;margin:12px 0} nav a{margin-right:14px;color:#24364f}
section{background:#fff;border:1px solid #dde1e6;border-radius:6px;margin:18px 0;padding:14px 20px}
h2{font-size:18px;margin:4px 0 10px;color:#24364f}
figure{margin:0 0 8px} img{max-width:100%;height:auto;display:block;margin:6px 0}
figcaption,.caption{font-size:14px;color:#444;max-width:1000px}
.file{font-size:12px;color:#777}
table{border-collapse:collapse;font-size:13px;margin:10px 0;font-variant-numeric:tabular-nums}
th,td{border:1px solid #dde1e6;padding:3px 8px;text-align:right}
th{background:#eef1f5} td:first-child,th:first-child{text-align:left}
.info td{text-align:left}.info td:first-child{font-weight:600;color:#24364f}
.notes{background:#fff8e1;border-color:#f0d58c}
"""


def _render_html(inp: ReportInput, panels: list[Panel], images: dict[str, bytes]) -> str:
    esc = html.escape
    info = _input_summary(inp)
    rows = [["input", f"{info['kind']}: {info['path']}"], ["data", info["data"]],
            ["nodes / edges", f"{info['n_nodes']} / {info['n_edges']}"],
            ["affinity", info["affinity"]]]
    if info["model"]:
        rows.insert(1, ["model", info["model"]])
    if info["n_clusters"] is not None:
        rows.append(["clusters", info["n_clusters"]])
    if "graph" in info:
        gi = info["graph"]
        rows.append(["graph", f"k={gi['k']}, kernel {gi['kernel']}, space {gi['embedder']}"])
    for p in panels:
        if "scores" in p.summary:
            rows.append(["scores", "  ".join(f"{k.upper()} {v:.4f}"
                                             for k, v in p.summary["scores"].items())])
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>graphclust inspect: {esc(inp.name)}</title>", f"<style>{_CSS}</style>",
        "</head><body>",
        (f"<header><h1>graphclust inspect: {esc(inp.name)}</h1>"
         f"<p>{esc(inp.kind)} report, generated {esc(time.strftime('%Y-%m-%d %H:%M'))}</p>"
         "</header>"),
        "<main>", "<nav>" + "".join(f'<a href="#{p.key}">{esc(p.title)}</a>' for p in panels)
        + "</nav>",
        '<section id="input"><h2>Input</h2>' + _table(["", ""], rows).replace(
            "<table>", '<table class="info">').replace(
            "<thead><tr><th></th><th></th></tr></thead>", "")
        + "</section>",
    ]
    if inp.notes:
        parts.append('<section class="notes"><h2>Notes</h2><ul>'
                     + "".join(f"<li>{esc(n)}</li>" for n in inp.notes) + "</ul></section>")
    for p in panels:
        parts.append(f'<section id="{p.key}"><h2>{esc(p.title)}</h2>')
        for fname, _ in p.figures:
            b64 = base64.b64encode(images[fname]).decode("ascii")
            parts.append(f'<figure><img src="data:image/png;base64,{b64}" alt="{esc(p.title)}">'
                         f'<div class="file">{esc(fname)}</div></figure>')
        parts.append(f'<p class="caption">{esc(p.caption)}</p>')
        if p.table:
            parts.append(p.table)
        parts.append("</section>")
    parts.append('<p class="file">The numbers behind every panel are in summary.json.</p>')
    parts.append("</main></body></html>")
    return "\n".join(parts) + "\n"


def _swap_into_place(tmp: Path, out: Path) -> None:
    """Rename ``tmp`` onto ``out``, replacing an existing folder only after success."""
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
        old.rmdir()
        os.replace(out, old)
    try:
        os.replace(tmp, out)
    except BaseException:
        if old is not None:
            os.replace(old, out)
        raise
    if old is not None:
        if old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink()


def write_report(
    inp: ReportInput, out_dir: str | os.PathLike, *, force: bool = False, max_nodes: int = 5000,
    n_blocks: int = 200, map_method: str = "pca", n_ambiguous: int = 20, n_samples: int = 8,
    random_state=0, progress: bool = False,
) -> Path:
    """Write the report folder: ``index.html``, one PNG per figure and ``summary.json``.

    Parameters
    ----------
    inp : ReportInput
        From :func:`~graphclust.inspect.inputs.load_inspection_input` or
        :meth:`ReportInput.from_model`.
    out_dir : path-like
        The report folder; must not exist unless ``force`` (then it is replaced
        only once the new report is complete).
    max_nodes : int
        Nodes sampled for kNN purity of the input/embedding and for the 2-D map.
    n_blocks : int
        Blocks per side of the aggregated affinity heatmaps.
    map_method : {"pca", "umap"}
    n_ambiguous : int
        Rows of the ambiguous-node table.
    n_samples : int
        Representatives shown per cluster.
    random_state : int, Generator or None
        For the subsample and UMAP.
    progress : bool
        A tqdm bar over the panels (on stderr).

    Returns
    -------
    Path
        ``out_dir``.
    """
    out = prepare_output(out_dir, force=force, is_dir=True)
    check_report_options(max_nodes, n_blocks, map_method, n_ambiguous, n_samples)
    t_start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it private; a report is shared
        ctx = _context(inp, max_nodes, n_blocks, map_method, n_ambiguous, n_samples,
                       random_state)
        images: dict[str, bytes] = {}

        def render(panel: Panel) -> None:
            for fname, fig in panel.figures:
                images[fname] = F.figure_png(fig)
                (tmp / fname).write_bytes(images[fname])

        panels, seconds = _run_panels(ctx, progress, render)
        (tmp / "index.html").write_text(_render_html(inp, panels, images), encoding="utf-8")
        summary = {
            "input": _input_summary(inp),
            "panels": {p.key: dict(p.summary, title=p.title, caption=p.caption,
                                   files=[f for f, _ in p.figures]) for p in panels},
            "files": ["index.html", "summary.json"] + sorted(images),
            "options": {"max_nodes": max_nodes, "n_blocks": n_blocks, "map": map_method,
                        "n_ambiguous": n_ambiguous, "n_samples": n_samples},
            "seconds": dict(seconds, total=time.perf_counter() - t_start),
            "versions": versions(),
        }
        (tmp / "summary.json").write_text(_dumps(_jsonable(summary)) + "\n", encoding="utf-8")
        _swap_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out

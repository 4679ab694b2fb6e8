"""Figures of the inspection report, each a :class:`matplotlib.figure.Figure` built from numbers.

The functions take the results of :mod:`graphclust.inspect.stats` (so a notebook can
recompute or tweak the numbers and redraw) and never touch pyplot's global state:
figures are created with ``Figure()`` and drawn on the Agg canvas (no backend switch, no
display needed), so they are safe in scripts, threads and notebooks (where a returned
``Figure`` displays itself).
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import matplotlib
import numpy as np
from matplotlib import colors as mcolors
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator, NullLocator

from graphclust.inspect.stats import BlockAffinity, Confusion, Histogram, TopFeatures

__all__ = [
    "figure_png",
    "group_colors",
    "plot_block_affinity",
    "plot_cluster_affinity",
    "plot_distributions",
    "plot_map",
    "plot_purity",
    "plot_samples",
    "plot_top_features",
    "plot_training",
]

_MAX_TICK_GROUPS = 30
_MAX_ANNOTATED = 15
_DPI = 100


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def figure_png(fig: Figure, dpi: int = _DPI) -> bytes:
    """The figure as PNG bytes (white background)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, facecolor="white")
    return buf.getvalue()


def group_colors(n_groups: int) -> np.ndarray:
    """``(n_groups, 4)`` RGBA colours: tab10 / tab20 when they suffice, else evenly spaced hues."""
    if n_groups <= 10:
        return np.asarray(matplotlib.colormaps["tab10"].colors)[:n_groups]
    if n_groups <= 20:
        return np.asarray(matplotlib.colormaps["tab20"].colors)[:n_groups]
    return matplotlib.colormaps["turbo"](np.linspace(0.05, 0.95, n_groups))[:, :3]


# --------------------------------------------------------------------------- affinity
def plot_block_affinity(
    panels: Sequence[tuple[str, BlockAffinity]], group_names: Sequence | None = None,
    group_kinds: Sequence[str] | None = None, value_label: str = "mean affinity per block",
) -> Figure:
    """Heatmaps of block-aggregated affinity, one per ordering, with group boundaries.

    Parameters
    ----------
    panels : sequence of (title, BlockAffinity)
    group_names : sequence of sequences, optional
        Per panel, the display name of each group code (default the code).
    group_kinds : sequence of str, optional
        Per panel, what the groups are (axis label), e.g. ``"cluster"``.
    """
    fig = _figure(6.2 * len(panels), 5.6)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for p, (ax, (title, blk)) in enumerate(zip(axes, panels)):
        n = int(blk.bounds[-1])
        m = blk.matrix
        vmax = float(np.quantile(m, 0.995)) if m.size else 1.0
        vmax = vmax if vmax > 0 else (float(m.max()) if m.max() > 0 else 1.0)
        im = ax.imshow(
            m, cmap="magma_r", norm=mcolors.PowerNorm(0.5, vmin=0.0, vmax=vmax),
            extent=(0, n, n, 0), interpolation="nearest", aspect="equal",
        )
        for b in blk.group_bounds[1:-1]:
            ax.axhline(b, color="#4c9be8", lw=0.6, alpha=0.8)
            ax.axvline(b, color="#4c9be8", lw=0.6, alpha=0.8)
        kind = group_kinds[p] if group_kinds else "group"
        names = group_names[p] if group_names else None
        if len(blk.group_ids) <= _MAX_TICK_GROUPS:
            mids = (blk.group_bounds[:-1] + blk.group_bounds[1:]) / 2
            labels = [str(names[g]) if names is not None else str(g) for g in blk.group_ids]
            ax.set_xticks(mids, labels, fontsize=7)
            ax.set_yticks(mids, labels, fontsize=7)
        ax.set_xlabel(f"neighbour j, ordered by {kind}")
        ax.set_ylabel(f"node i, ordered by {kind}")
        per = "one node per pixel" if m.shape[0] == n else \
            f"{m.shape[0]} x {m.shape[0]} blocks of ~{n / m.shape[0]:.0f} nodes"
        ax.set_title(f"{title}\n{per}", fontsize=10)
        cb = fig.colorbar(im, ax=ax, shrink=0.8)
        cb.set_label(value_label + " (sqrt scale)")
    return fig


def _annotate(ax, M: np.ndarray, fmt: str, norm_max: float) -> None:
    for (r, c), v in np.ndenumerate(M):
        dark = norm_max > 0 and v > 0.6 * norm_max
        ax.text(c, r, format(v, fmt), ha="center", va="center", fontsize=7,
                color="white" if dark else "black")


def plot_cluster_affinity(
    C: np.ndarray, names: Sequence | None = None, conf: Confusion | None = None,
    scores: Mapping[str, float] | None = None, kind: str = "cluster",
) -> Figure:
    """The ``group x group`` mean affinity and, when given, the matched confusion matrix."""
    k = C.shape[0]
    names = [str(v) for v in (names if names is not None else range(k))]
    ncols = 2 if conf is not None else 1
    size = min(max(4.5, 0.45 * k + 2.5), 11)
    fig = _figure(size * ncols + 0.8, size)
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    ax = axes[0]
    vmax = float(C.max()) if C.size and C.max() > 0 else 1.0
    im = ax.imshow(C, cmap="magma_r", norm=mcolors.PowerNorm(0.5, vmin=0, vmax=vmax))
    ticks = np.arange(k)
    step = max(1, k // _MAX_TICK_GROUPS)
    ax.set_xticks(ticks[::step], [names[i] for i in ticks[::step]], fontsize=7)
    ax.set_yticks(ticks[::step], [names[i] for i in ticks[::step]], fontsize=7)
    ax.set_xlabel(f"{kind} b")
    ax.set_ylabel(f"{kind} a")
    ax.set_title(f"{kind} x {kind} mean affinity", fontsize=10)
    if k <= _MAX_ANNOTATED:
        _annotate(ax, C, ".2g", vmax)
    fig.colorbar(im, ax=ax, shrink=0.8).set_label("mean affinity (sqrt scale)")
    if conf is not None:
        ax = axes[1]
        M = conf.matrix
        cmax = float(M.max()) if M.size and M.max() > 0 else 1.0
        im = ax.imshow(M, cmap="Blues", vmin=0, vmax=cmax, aspect="auto")
        rs = max(1, M.shape[0] // _MAX_TICK_GROUPS)
        cs = max(1, M.shape[1] // _MAX_TICK_GROUPS)
        ax.set_yticks(np.arange(M.shape[0])[::rs], [str(v) for v in conf.clusters[::rs]],
                      fontsize=7)
        ax.set_xticks(np.arange(M.shape[1])[::cs], [str(v) for v in conf.classes[::cs]], fontsize=7)
        ax.set_ylabel("predicted cluster (matched order)")
        ax.set_xlabel("true label")
        title = "confusion after Hungarian matching"
        if scores:
            title += "\n" + "  ".join(f"{k.upper()} {v:.3f}" for k, v in scores.items())
        ax.set_title(title, fontsize=10)
        if max(M.shape) <= _MAX_ANNOTATED:
            _annotate(ax, M, "d", cmax)
        cb = fig.colorbar(im, ax=ax, shrink=0.8)
        cb.set_label("nodes")
        cb.locator = MaxNLocator(integer=True)
        cb.update_ticks()
    return fig


# --------------------------------------------------------------------------- graph quality
def plot_purity(curves: Mapping[str, Mapping[int, float]], reference: str = "label") -> Figure:
    """Neighbour purity against ``k``, one line per space."""
    fig = _figure(6.4, 4.2)
    ax = fig.subplots()
    styles = [("o", "-", 9), ("s", "--", 6), ("D", ":", 5), ("^", "-.", 5)]
    for i, (name, curve) in enumerate(curves.items()):
        ks = sorted(int(k) for k in curve)
        marker, ls, ms = styles[i % len(styles)]
        ax.plot(ks, [curve[k] for k in ks], marker=marker, ls=ls, ms=ms, lw=1.6, label=name,
                alpha=0.85)
    ax.set_xscale("log")
    all_ks = sorted({int(k) for curve in curves.values() for k in curve})
    if all_ks:
        ax.set_xticks(all_ks, [str(k) for k in all_ks])
        ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("k (neighbours)")
    ax.set_ylabel(f"fraction of neighbours with the same {reference}")
    ax.set_ylim(0, 1.02)
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title("neighbour purity", fontsize=10)
    if curves:
        ax.legend(fontsize=8, loc="lower left")
    return fig


def plot_distributions(
    degree: Histogram, weights: Mapping[str, Histogram], weight_label: str = "edge weight",
    extra: tuple[str, Histogram] | None = None, degree_label: str = "in-degree",
) -> Figure:
    """Histograms of the in-degree and of the edge weights (split into named subsets)."""
    ncols = 3 if extra is not None else 2
    fig = _figure(4.4 * ncols, 3.8)
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    ax = axes[0]
    ax.stairs(degree.counts, degree.edges, fill=True, color="#4c72b0", alpha=0.8)
    ax.set_xlabel(f"{degree_label} (times a node is a neighbour)")
    ax.set_ylabel("nodes")
    ax.set_title(degree_label, fontsize=10)
    ax = axes[1]
    palette = ["#55a868", "#c44e52", "#8172b2"]
    for i, (name, h) in enumerate(weights.items()):
        ax.stairs(h.counts, h.edges, fill=True, alpha=0.55, color=palette[i % 3], label=name)
    ax.set_xlabel(weight_label)
    ax.set_ylabel("edges")
    ax.set_title(weight_label, fontsize=10)
    if len(weights) > 1:
        ax.legend(fontsize=8)
    if extra is not None:
        ax = axes[2]
        ax.stairs(extra[1].counts, extra[1].edges, fill=True, color="#8c8c8c", alpha=0.8)
        ax.set_xlabel(extra[0])
        ax.set_ylabel("edges")
        ax.set_title(extra[0], fontsize=10)
    for ax in axes:
        ax.grid(True, alpha=0.3)
    return fig


# --------------------------------------------------------------------------- samples
def _to_image(row: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    img = np.asarray(row, dtype=np.float64).reshape(shape)
    if img.ndim == 3 and img.shape[0] in (1, 3) and img.shape[-1] not in (1, 3):
        img = np.moveaxis(img, 0, -1)  # CHW -> HWC
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    lo, hi = float(img.min()), float(img.max())
    return (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)


def plot_samples(
    X: np.ndarray, image_shape: tuple[int, ...], rows: Sequence[np.ndarray],
    row_titles: Sequence[str], title: str = "", tile_titles: Sequence[Sequence[str]] | None = None,
) -> Figure:
    """A grid of images: one row per group (``rows[r]`` node ids), one tile per node."""
    n_rows = max(len(rows), 1)
    n_cols = max([len(r) for r in rows] + [1])
    tile = 0.9 if tile_titles is None else 1.2
    fig = _figure(1.8 + tile * n_cols, 0.5 + tile * n_rows)
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    for r in range(n_rows):
        for c in range(n_cols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            for s in ax.spines.values():
                s.set_visible(False)
            if r < len(rows) and c < len(rows[r]):
                img = _to_image(X[rows[r][c]], image_shape)
                ax.imshow(img, cmap="gray" if img.ndim == 2 else None, interpolation="nearest")
                if tile_titles is not None:
                    ax.set_title(tile_titles[r][c], fontsize=7)
            if c == 0 and r < len(row_titles):
                ax.set_ylabel(row_titles[r], rotation=0, ha="right", va="center", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def plot_top_features(top: TopFeatures, row_titles: Sequence[str],
                      feature_names: Sequence[str] | None = None) -> Figure:
    """Per group, horizontal bars of its top features (group mean - overall mean)."""
    k = top.features.shape[0]
    ncols = min(4, max(k, 1))
    nrows = int(np.ceil(k / ncols)) if k else 1
    n_top = top.features.shape[1]
    fig = _figure(3.6 * ncols, (0.22 * n_top + 0.9) * nrows)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for g, ax in enumerate(axes):
        if g >= k:
            ax.set_visible(False)
            continue
        feats = top.features[g]
        names = [feature_names[f] if feature_names is not None else f"x{f}" for f in feats]
        ax.barh(np.arange(len(feats)), top.differences[g], color="#4c72b0")
        ax.set_yticks(np.arange(len(feats)), names, fontsize=7)
        ax.invert_yaxis()
        ax.tick_params(axis="x", labelsize=7)
        ax.set_title(row_titles[g], fontsize=8)
        ax.set_xlabel("mean in group - overall mean", fontsize=7)
    return fig


# --------------------------------------------------------------------------- spaces
def plot_map(coords: np.ndarray, colorings: Mapping[str, tuple[np.ndarray, Sequence]],
             method: str = "pca") -> Figure:
    """Scatter plots of 2-D coordinates, one per colouring.

    Parameters
    ----------
    coords : ndarray of shape (n_points, 2)
    colorings : mapping
        ``title -> (codes (n_points,), names (n_groups,))``.
    """
    ncols = max(len(colorings), 1)
    fig = _figure(5.6 * ncols, 5.0)
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    size = float(np.clip(20000.0 / max(coords.shape[0], 1), 3.0, 25.0))
    for ax, (title, (codes, names)) in zip(axes, colorings.items()):
        cols = group_colors(len(names))
        ax.scatter(coords[:, 0], coords[:, 1], c=cols[codes], s=size, linewidths=0, alpha=0.8,
                   rasterized=True)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(f"{method} 1")
        ax.set_ylabel(f"{method} 2")
        ax.set_xticks([])
        ax.set_yticks([])
        if len(names) <= 20:
            handles = [Line2D([], [], ls="", marker="o", ms=5, color=cols[i],
                                               label=str(v)) for i, v in enumerate(names)]
            ax.legend(handles=handles, fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5),
                      frameon=False, handletextpad=0.2)
    return fig


def plot_training(history: Sequence[Mapping]) -> Figure:
    """Loss and (when present) ACC/NMI/ARI per epoch."""
    epochs = [rec.get("epoch", i) for i, rec in enumerate(history)]
    metric_names = [m for m in ("acc", "nmi", "ari") if any(m in rec for rec in history)]
    ncols = 2 if metric_names else 1
    fig = _figure(5.4 * ncols, 3.8)
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    ax = axes[0]
    loss = [rec.get("loss", np.nan) for rec in history]
    ax.plot(epochs, loss, marker="o", ms=3, color="#c44e52")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_title("training loss", fontsize=10)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, alpha=0.3)
    if metric_names:
        ax = axes[1]
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        for m in metric_names:
            ax.plot(epochs, [rec.get(m, np.nan) for rec in history], marker="o", ms=3,
                    label=m.upper())
        ax.set_xlabel("epoch")
        ax.set_ylabel("score")
        ax.set_ylim(0, 1.02)
        ax.set_title("clustering scores against the labels", fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    return fig

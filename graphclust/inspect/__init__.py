"""Reports on learned affinity matrices and clusters (``graphclust inspect``).

Layers, from the bottom:

- :mod:`~graphclust.inspect.stats`: pure functions returning the numbers behind each
  panel (:func:`block_affinity`, :func:`cluster_affinity`, :func:`ordering`,
  :func:`ambiguous_nodes`, ...); no dense ``n x n`` matrix anywhere.
- :mod:`~graphclust.inspect.figures`: matplotlib ``Figure`` objects drawn from those numbers.
- :mod:`~graphclust.inspect.interface`: the :class:`Inspectable` protocol models follow,
  :func:`inspection_arrays` / :func:`save_inspection` (the ``inspection.npz`` of a run).
- :mod:`~graphclust.inspect.inputs`: :class:`ReportInput` and :func:`load_inspection_input`
  (a graph ``.npz`` or a run folder, validated before anything is written).
- :mod:`~graphclust.inspect.report`: :func:`write_report` (``index.html``, PNGs, ``summary.json``).

Example
-------
>>> inp = load_inspection_input("runs/mnist-dgg")            # doctest: +SKIP
>>> write_report(inp, "reports/mnist-dgg")                    # doctest: +SKIP
"""

from graphclust.inspect.inputs import (
    Grouping,
    ReportInput,
    graph_matrix,
    load_inspection_input,
)
from graphclust.inspect.interface import (
    INSPECTION_FILE,
    Inspectable,
    affinity_from_edges,
    edge_affinity,
    inspection_arrays,
    load_inspection,
    save_inspection,
)
from graphclust.inspect.report import MAP_METHODS, Panel, build_panels, write_report
from graphclust.inspect.stats import (
    ambiguous_nodes,
    block_affinity,
    cluster_affinity,
    confusion,
    group_strength,
    in_degree,
    knn_purity_curve,
    map_2d,
    nearest_clusters,
    neighbor_agreement,
    ordered_block_affinity,
    ordering,
    posterior_agreement,
    representatives,
    top_features,
)

__all__ = [
    "INSPECTION_FILE",
    "MAP_METHODS",
    "Grouping",
    "Inspectable",
    "Panel",
    "ReportInput",
    "affinity_from_edges",
    "ambiguous_nodes",
    "block_affinity",
    "build_panels",
    "cluster_affinity",
    "confusion",
    "edge_affinity",
    "graph_matrix",
    "group_strength",
    "in_degree",
    "inspection_arrays",
    "knn_purity_curve",
    "load_inspection",
    "load_inspection_input",
    "map_2d",
    "nearest_clusters",
    "neighbor_agreement",
    "ordered_block_affinity",
    "ordering",
    "posterior_agreement",
    "representatives",
    "save_inspection",
    "top_features",
    "write_report",
]

"""``graphclust inspect``: an HTML report on the affinity and clusters of a graph or a run."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "inspect",
        help="write an HTML report on a kNN graph or a training run",
        description=(
            "Report on PATH, a kNN graph .npz from `graphclust build-graph` or a run folder of "
            "`graphclust train`: the affinity matrix ordered by cluster and label (block-"
            "aggregated), cluster x cluster affinity, confusion matrix, neighbour purity, degree "
            "and edge-weight distributions, the most ambiguous nodes, representative samples per "
            "cluster, a 2-D map and training curves. Writes OUTPUT/index.html (self-contained), "
            "one PNG per figure and OUTPUT/summary.json with the numbers behind each panel."
        ),
    )
    p.add_argument("path", metavar="PATH", help="graph .npz or run folder")
    p.add_argument("-o", "--output", required=True, help="report folder to create, e.g. report/")
    p.add_argument("--data", default=None,
                   help="the data set (name or file) PATH was built from; default: the one named "
                        "in its config (used for sample images and input-space purity)")
    p.add_argument("--data-dir", default=None,
                   help="folder with benchmark files (default: $GRAPHCLUST_DATA_DIR or "
                        "~/.cache/graphclust)")
    p.add_argument("--max-nodes", type=int, default=5000,
                   help="nodes sampled for input/embedding purity and the 2-D map (default 5000)")
    p.add_argument("--blocks", type=int, default=200,
                   help="blocks per side of the aggregated affinity heatmap (default 200)")
    p.add_argument("--map", choices=("pca", "umap"), default="pca",
                   help="2-D map method (default pca; umap needs umap-learn)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the subsample (default 0)")
    p.add_argument("--force", action="store_true", help="replace an existing report folder")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    return p


def run(args: argparse.Namespace) -> int:
    from graphclust.inspect import load_inspection_input, write_report
    from graphclust.inspect.report import check_report_options
    from graphclust.utils import prepare_output

    # everything is validated before the report folder is created
    prepare_output(args.output, force=args.force, is_dir=True)
    check_report_options(args.max_nodes, args.blocks, args.map, 20, 8)
    inp = load_inspection_input(args.path, data=args.data, data_dir=args.data_dir)
    out = write_report(inp, args.output, force=args.force, max_nodes=args.max_nodes,
                       n_blocks=args.blocks, map_method=args.map, random_state=args.seed,
                       progress=not args.quiet)
    files = sorted(p.name for p in Path(out).iterdir())
    print(f"inspected {inp.kind} {args.path} ({inp.name}, {inp.n_nodes} nodes) -> "
          f"{out / 'index.html'} ({len(files)} files)")
    for note in inp.notes:
        print(f"note: {note}", file=sys.stderr)
    return 0

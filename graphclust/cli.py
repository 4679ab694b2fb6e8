"""The ``graphclust`` command: one entry point, one module per subcommand."""

from __future__ import annotations

import argparse
import importlib
import sys

from graphclust.distributed import is_main
from graphclust.utils import GraphclustError

# subcommand name -> module under graphclust.commands
SUBCOMMANDS = {
    "build-graph": "build_graph",
    "train": "train",
    "inspect": "inspect",
    "datasets": "datasets",
    "train-chigac": "train_chigac",  # also registers cluster-chigac
}


def build_parser() -> argparse.ArgumentParser:
    from graphclust import __version__

    parser = argparse.ArgumentParser(
        prog="graphclust",
        description="Graph-centric deep clustering: build kNN graphs, train models, inspect them.",
    )
    parser.add_argument("--version", action="version", version=f"graphclust {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in SUBCOMMANDS.items():
        try:
            mod = importlib.import_module(f"graphclust.commands.{module}")
        except ModuleNotFoundError as exc:
            if exc.name == f"graphclust.commands.{module}":
                continue  # subcommand not shipped in this build
            raise
        p = mod.add_parser(sub)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except GraphclustError as exc:
        # in a torchrun job, an error rank 0 shared with every rank is reported once
        if getattr(exc, "raised_on_rank", None) != 0 or is_main():
            print(f"graphclust {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"graphclust {args.command}: interrupted; nothing half-written was left", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

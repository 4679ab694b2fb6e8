"""``graphclust datasets``: list the dataset names that ``DATA`` arguments accept."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    return sub.add_parser(
        "datasets",
        help="list known dataset names",
        description="List dataset names accepted wherever a DATA argument is expected.",
    )


def run(args: argparse.Namespace) -> int:
    from graphclust.data.loaders import available_datasets, default_data_dir

    names = available_datasets()
    width = max(map(len, names))
    for name, desc in names.items():
        print(f"{name:<{width}}  {desc}")
    print(f"\nnamed files are looked up in $GRAPHCLUST_DATA_DIR or --data-dir "
          f"(default {default_data_dir()}); any .npz/.npy/.csv path works too")
    return 0

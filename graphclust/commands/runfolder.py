"""Run folders shared by the training commands (``train``, ``train-chigac``)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from graphclust.utils import GraphclustError, atomic_path, prepare_output

__all__ = ["prepare_run_folder", "write_jsonl"]


def prepare_run_folder(out: Path, resume: bool, force: bool) -> bool:
    """Check or clear the run folder ``out``.

    Parameters
    ----------
    out : Path
        The run folder.
    resume : bool
        Continue the run already in ``out`` (it must hold a ``config.json``).
    force : bool
        Delete an existing run folder first; a non-empty folder without ``config.json``
        is never deleted.

    Returns
    -------
    bool
        True when an earlier run is resumed.
    """
    config = out / "config.json"
    if out.exists() and not out.is_dir():
        raise GraphclustError(f"output {out} is a file, but a run folder is expected")
    if out.exists() and resume:
        if not config.exists():
            raise GraphclustError(
                f"{out} has no config.json, so it is not a run folder to resume; choose another -o"
            )
        return True
    if out.exists() and force:
        if any(out.iterdir()) and not config.exists():
            raise GraphclustError(
                f"{out} is not empty and is not a graphclust run folder (no config.json); "
                "refusing to delete it with --force; choose another -o"
            )
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    prepare_output(out, force=False, is_dir=True)
    return False


def write_jsonl(path: Path, records: list[dict]) -> None:
    """Write ``records`` as JSON lines, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in records))

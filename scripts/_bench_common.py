"""Helpers shared by the benchmark scripts: peak memory and one JSON result file per run.

Every result file has the same flat keys: ``benchmark``, ``dataset``, ``model``,
``metrics`` (a dict), ``wall_s``, ``peak_rss_mb``, ``command``, ``versions``,
``machine`` and ``date`` (UTC, ISO 8601). Files are written atomically and never
overwrite an earlier result.
"""

from __future__ import annotations

import datetime as _dt
import re
import resource
import shlex
import sys
from pathlib import Path
from typing import Any

from graphclust.utils import machine, versions, write_json

__all__ = ["command_line", "current_rss_mb", "peak_rss_mb", "write_result"]


def peak_rss_mb(children: bool = False) -> float:
    """Peak resident set size in MiB of this process (or of its finished children).

    For this process, Linux's ``VmHWM`` (``/proc/self/status``) is used when it
    exists: unlike ``ru_maxrss`` it is not inherited across ``fork`` + ``exec``, so a
    benchmark subprocess reports its own peak, not its parent's. Otherwise
    ``ru_maxrss`` (KiB on Linux, bytes on macOS).
    """
    if not children:
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**10
        except OSError:
            pass
    who = resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF
    peak = resource.getrusage(who).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def current_rss_mb() -> float | None:
    """Current resident set size in MiB (needs psutil; ``None`` without it)."""
    try:
        import psutil
    except ImportError:
        return None
    return psutil.Process().memory_info().rss / 2**20


def command_line(argv: list[str] | None = None) -> str:
    """The command that reproduces this run, shell-quoted."""
    args = sys.argv if argv is None else argv
    return " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *args])


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "x"


def write_result(
    out_dir: str | Path,
    *,
    benchmark: str,
    dataset: str,
    model: str,
    metrics: dict[str, Any],
    wall_s: float,
    peak_rss_mb: float | None,
    command: str | None = None,
    tag: str | None = None,
) -> Path:
    """Write one benchmark result as JSON into ``out_dir`` and return its path.

    The file name is ``<benchmark>__<dataset>__<model>[__<tag>]__<UTC time>.json``;
    a run never overwrites an earlier file (a counter is appended on a clash).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    now = _dt.datetime.now(_dt.timezone.utc)
    record = {
        "benchmark": benchmark,
        "dataset": dataset,
        "model": model,
        "metrics": metrics,
        "wall_s": float(wall_s),
        "peak_rss_mb": None if peak_rss_mb is None else float(peak_rss_mb),
        "command": command if command is not None else command_line(),
        "versions": versions(),
        "machine": machine(),
        "date": now.isoformat(timespec="seconds"),
    }
    parts = [benchmark, dataset, model] + ([tag] if tag else []) + [now.strftime("%Y%m%dT%H%M%S")]
    stem = "__".join(_slug(p) for p in parts)
    path = out / f"{stem}.json"
    counter = 1
    while path.exists():
        path = out / f"{stem}_{counter}.json"
        counter += 1
    write_json(path, record)
    return path

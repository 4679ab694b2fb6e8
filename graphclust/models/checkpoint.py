"""Checkpoints and stage artifacts, written atomically and loaded without arbitrary pickle.

- Weights (stage artifacts, the final model): safetensors with a JSON metadata string.
- Training state (model + optimizer + scheduler + RNG states + history): ``torch.save`` of
  plain containers and tensors only, read back with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, NamedTuple

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from graphclust.utils import GraphclustError, atomic_path

__all__ = [
    "EpochState",
    "config_fingerprint",
    "epoch_line",
    "load_state",
    "load_weights",
    "restore_epoch_state",
    "save_epoch_state",
    "save_state",
    "save_weights",
]


def config_fingerprint(config: dict[str, Any]) -> str:
    """A short, order-independent hash of a JSON-serialisable configuration."""
    import hashlib

    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def save_weights(path: str | os.PathLike, state_dict: dict[str, torch.Tensor], meta: dict) -> Path:
    """Save a state dict as safetensors (atomically) with ``meta`` as JSON metadata."""
    path = Path(path)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state_dict.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"graphclust": json.dumps(meta, default=str)})
    return path


def load_weights(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """Load ``(state_dict, meta)`` saved by :func:`save_weights`."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = json.loads((fh.metadata() or {}).get("graphclust", "{}"))
        return load_file(str(path)), meta
    except (SafetensorError, OSError, json.JSONDecodeError) as exc:
        raise GraphclustError(
            f"could not read {path} ({exc}); delete it (or rerun with --force) to recompute it"
        ) from exc


def save_state(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """``torch.save`` a dict of tensors / numbers / strings / lists / dicts, atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return path


def load_state(path: str | os.PathLike) -> dict[str, Any]:
    """Load a training state with ``weights_only=True`` (no arbitrary code on load)."""
    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors come in many types
        raise GraphclustError(
            f"could not read checkpoint {path} ({type(exc).__name__}: {exc}); delete it (or rerun "
            "with --force) to start the stage over"
        ) from exc


class EpochState(NamedTuple):
    """Training state restored from an epoch checkpoint (see :func:`restore_epoch_state`)."""

    start: int
    pi: torch.Tensor | None
    gamma: torch.Tensor
    history: list[dict]


def restore_epoch_state(
    state: dict[str, Any],
    path: str | os.PathLike,
    fingerprint: str,
    n_epochs: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    generators: dict[str, torch.Generator],
    device: torch.device,
) -> EpochState:
    """Load an epoch checkpoint written by a training loop back into its objects.

    Parameters
    ----------
    state : dict
        The checkpoint (:func:`load_state`) with keys ``fingerprint``, ``epoch``,
        ``model``, ``optimizer``, ``scheduler``, ``rng``, ``pi``, ``gamma``, ``history``.
    path : path-like
        Where it came from (for messages).
    fingerprint : str
        The current run's settings fingerprint; a checkpoint of other settings is refused.
    n_epochs : int
        Epochs asked for; a checkpoint beyond them is refused.
    model, optimizer, scheduler :
        Restored in place.
    generators : dict
        ``{"batch": ..., "noise": ...}`` generators whose states are restored.
    device : torch.device
        Where ``pi`` and ``gamma`` go.
    """
    if state.get("fingerprint") != fingerprint:
        raise GraphclustError(
            f"checkpoint {path} was written by a run with other settings or data; start over "
            "(--force) or resume with the original settings"
        )
    start = int(state["epoch"])
    if start > n_epochs:
        raise GraphclustError(
            f"checkpoint {path} is at epoch {start}, beyond n_epochs={n_epochs}; "
            "ask for at least that many epochs"
        )
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    for name, gen in generators.items():
        gen.set_state(state["rng"][name])
    pi = None if state["pi"] is None else state["pi"].to(device)
    return EpochState(start, pi, state["gamma"].to(device), list(state["history"]))


def save_epoch_state(
    path: str | os.PathLike,
    fingerprint: str,
    epoch: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    generators: dict[str, torch.Generator | None],
    pi: torch.Tensor | None,
    gamma: torch.Tensor,
    history: list[dict],
) -> Path:
    """Write the epoch checkpoint that :func:`restore_epoch_state` reads back (atomically)."""
    return save_state(path, {
        "format": 1,
        "fingerprint": fingerprint,
        "epoch": epoch,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": {name: None if gen is None else gen.get_state() for name, gen in generators.items()},
        "pi": None if pi is None else pi.cpu(),
        "gamma": gamma.cpu(),
        "history": history,
    })


def epoch_line(record: dict[str, Any], n_epochs: int) -> str:
    """The one-line summary a training loop prints after an epoch."""
    scores = "".join(f" {k} {record[k]:.4f}" for k in ("acc", "nmi", "ari") if k in record)
    return (f"epoch {record['epoch']}/{n_epochs}: loss {record['loss']:.4f}{scores} "
            f"({record['time_s']:.1f} s)")

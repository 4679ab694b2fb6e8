"""Small shared helpers: the one device resolver, local randomness, atomic writes, validation.

Every other module goes through these so that device choice, seeding and the
"nothing half-written" rule live in exactly one place.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "GraphclustError",
    "SubnormalGuard",
    "atomic_path",
    "check_features",
    "check_labels",
    "check_random_state",
    "machine",
    "prepare_output",
    "resolve_device",
    "seed_from",
    "torch_generator",
    "versions",
    "write_json",
]


class GraphclustError(ValueError):
    """Raised for bad user input; the message says what was wrong and what to do."""


# --------------------------------------------------------------------------- device
def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """Resolve a user device request to a :class:`torch.device`.

    Parameters
    ----------
    device : {"auto", "cpu", "cuda", "cuda:N", "mps"} or torch.device or None
        ``"auto"`` / ``None`` pick CUDA when available, else CPU.

    Returns
    -------
    torch.device
    """
    if isinstance(device, torch.device):
        dev = device
    else:
        name = "auto" if device is None else str(device).strip().lower()
        if name == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        try:
            dev = torch.device(name)
        except RuntimeError as exc:
            raise GraphclustError(
                f"unknown device {device!r}; expected 'auto', 'cpu', 'cuda' or 'cuda:N'"
            ) from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise GraphclustError(
            f"device {str(dev)!r} was requested but CUDA is not available on this machine; "
            "use --device cpu (or auto)"
        )
    if dev.type == "mps" and not (
        hasattr(torch.backends, "mps") and torch.backends.mps.is_available()
    ):
        raise GraphclustError("device 'mps' was requested but MPS is not available; use cpu")
    return dev


# --------------------------------------------------------------------------- randomness
def check_random_state(seed: int | np.random.Generator | None) -> np.random.Generator:
    """Return a local NumPy generator; never touches the global RNG.

    Parameters
    ----------
    seed : int, numpy.random.Generator or None
        ``None`` gives fresh OS entropy; an int gives a reproducible generator; a
        generator is returned unchanged.
    """
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is None or isinstance(seed, (int, np.integer)):
        return np.random.default_rng(None if seed is None else int(seed))
    raise GraphclustError(f"random_state must be an int, a numpy Generator or None, got {seed!r}")


def seed_from(rng: np.random.Generator) -> int:
    """Draw a 63-bit integer seed from a generator (to seed a torch generator)."""
    return int(rng.integers(0, 2**63 - 1))


def torch_generator(
    seed: int | np.random.Generator | None, device: torch.device | str = "cpu"
) -> torch.Generator:
    """A local :class:`torch.Generator` seeded from ``seed`` (int, numpy Generator or None)."""
    rng = check_random_state(seed)
    gen = torch.Generator(device=device)
    gen.manual_seed(seed_from(rng))
    return gen


# --------------------------------------------------------------------------- I/O
@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success.

    On any exception the temporary file is removed, so the destination is either
    the old file (or absent) or the complete new file, never half-written.

    Parameters
    ----------
    path : path-like
        Final destination.
    suffix : str, optional
        Suffix for the temporary name (some writers, like ``np.savez``, append
        ``.npz`` when missing, so pass the destination's suffix).
    """
    dest = Path(path)
    parent = dest.parent if str(dest.parent) else Path(".")
    if not parent.exists():
        raise GraphclustError(f"cannot write {dest}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise GraphclustError(f"cannot write {dest}: folder {parent} is not writable")
    suffix = dest.suffix if suffix is None else suffix
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=f".tmp{suffix}", dir=parent)
    os.close(fd)
    # mkstemp creates 0600 files; give the result the usual umask-based mode
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, dest)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON atomically (NumPy scalars and paths converted)."""

    def _default(o: Any) -> Any:
        if isinstance(o, (np.integer,)):
            return int(o)
        if isinstance(o, (np.floating,)):
            return float(o)
        if isinstance(o, np.ndarray):
            return o.tolist()
        if isinstance(o, (Path, torch.device)):
            return str(o)
        raise TypeError(f"not JSON serialisable: {type(o).__name__}")

    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_default) + "\n")


def prepare_output(path: str | os.PathLike, force: bool = False, is_dir: bool = False) -> Path:
    """Check that an output path may be written; refuse to overwrite unless ``force``.

    Returns the path. Raises :class:`GraphclustError` with the fix when it exists
    already (without ``force``) or its folder is missing or not writable.
    """
    p = Path(path)
    if p.exists() and not force:
        kind = "folder" if p.is_dir() else "file"
        raise GraphclustError(
            f"output {kind} {p} exists already; pass --force (force=True) to overwrite it, "
            "or choose another path"
        )
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.exists():
        raise GraphclustError(f"cannot write {p}: folder {parent} does not exist; create it first")
    if not os.access(parent, os.W_OK):
        raise GraphclustError(f"cannot write {p}: folder {parent} is not writable")
    if is_dir and p.exists() and not p.is_dir():
        raise GraphclustError(f"output {p} is a file, but a folder is expected")
    return p


# --------------------------------------------------------------------------- validation
def check_features(X: Any, name: str = "X", min_samples: int = 2) -> np.ndarray:
    """Validate a feature matrix and return it as C-contiguous float32 ``(n_samples, n_features)``.

    Raises
    ------
    GraphclustError
        On non-numeric data, a wrong number of dimensions, fewer than
        ``min_samples`` rows, zero columns, or NaN/inf values (with their count
        and first row).
    """
    if isinstance(X, torch.Tensor):
        X = X.detach().cpu().numpy()
    try:
        arr = np.asarray(X)
    except Exception as exc:  # pragma: no cover - exotic inputs
        raise GraphclustError(f"{name} could not be converted to an array: {exc}") from exc
    if arr.dtype == object or not (
        np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_
    ):
        raise GraphclustError(f"{name} must be numeric, got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise GraphclustError(
            f"{name} must be 2-D (n_samples, n_features), got shape {arr.shape}; "
            "flatten images to one row per sample (e.g. X.reshape(len(X), -1))"
        )
    n, d = arr.shape
    if n < min_samples:
        raise GraphclustError(f"{name} has {n} sample(s); at least {min_samples} are needed")
    if d == 0:
        raise GraphclustError(f"{name} has no features (shape {arr.shape})")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    finite = np.isfinite(arr)
    if not finite.all():
        bad_rows = np.flatnonzero(~finite.all(axis=1))
        raise GraphclustError(
            f"{name} contains {int((~finite).sum())} NaN/inf value(s) in {bad_rows.size} row(s) "
            f"(first bad row: {int(bad_rows[0])}); remove or impute them first"
        )
    return arr


def infer_likelihood(X: np.ndarray) -> str:
    """``"bernoulli"`` when every value lies in ``[0, 1]``, else ``"gaussian"``.

    The one rule behind ``likelihood="auto"`` (:func:`graphclust.nn.likelihood.get_likelihood`)
    and the loaders' :attr:`LoadedData.likelihood` hint.
    """
    return "bernoulli" if float(np.min(X)) >= 0.0 and float(np.max(X)) <= 1.0 else "gaussian"


def check_labels(y: Any, n_samples: int, name: str = "y") -> np.ndarray:
    """Validate labels: 1-D, integer-valued, one per sample; returns int64."""
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise GraphclustError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.shape[0] != n_samples:
        raise GraphclustError(
            f"{name} has {arr.shape[0]} entries but X has {n_samples} rows; "
            "labels must give one class per sample"
        )
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise GraphclustError(f"{name} must hold integer class labels")
    elif not np.issubdtype(arr.dtype, np.integer):
        # strings or other hashables: encode in order of first sorted appearance
        _, arr = np.unique(arr, return_inverse=True)
    return arr.astype(np.int64)


# --------------------------------------------------------------------------- provenance
def versions() -> dict[str, str]:
    """Versions of the packages that decide results, for configs and benchmark files."""
    out = {"python": platform.python_version(), "numpy": np.__version__, "torch": torch.__version__}
    for mod in ("torch_geometric", "faiss", "sklearn", "scipy"):
        try:
            m = __import__(mod)
            out[mod] = getattr(m, "__version__", "unknown")
        except ImportError:
            pass
    try:
        from graphclust import __version__

        out["graphclust"] = __version__
    except ImportError:  # pragma: no cover
        pass
    return out


def machine() -> dict[str, Any]:
    """A short description of the machine (for benchmark results)."""
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


class SubnormalGuard:
    """Flush subnormal floats in a model's parameters and optimiser state to zero.

    With weight decay, weights that never receive a gradient (the first layer's weights
    of pixels that are always 0 in MNIST, the inputs of dead ReLU units) shrink
    geometrically, and the Adam moments of parameters whose gradient stopped decay the
    same way; after a few thousand steps they are subnormal, and x86 CPUs compute with
    subnormals tens of times slower: a DGG epoch on MNIST slowed from 16 s to 58 s.
    ``torch.set_flush_denormal`` cannot help, as it only reaches the calling thread, not
    the intra-op worker threads that already exist. Call :meth:`step` after each
    optimiser step; every ``every`` steps it sets entries with ``|x| < threshold`` to
    zero. The default ``1e-30`` leaves room: a value decaying by Adam's 0.9 per step
    needs ~70 steps from there to the subnormal range (below ``1.2e-38``), and nothing
    that small moves a float32 result computed from normal-sized values.

    Parameters
    ----------
    optimizer : torch.optim.Optimizer
        Its parameters and their state tensors are cleaned.
    every : int
        Steps between two passes (a pass costs about one elementwise op per tensor).
    threshold : float
        Magnitude below which entries are set to zero.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, every: int = 25,
                 threshold: float = 1e-30) -> None:
        self.optimizer = optimizer
        self.every = max(1, int(every))
        self.threshold = float(threshold)
        self._count = 0

    def step(self) -> None:
        self._count += 1
        if self._count % self.every == 0:
            self.flush()

    @torch.no_grad()
    def flush(self) -> None:
        """One pass over every floating tensor of the parameters and their state."""
        for group in self.optimizer.param_groups:
            for p in group["params"]:
                tensors = [p, *self.optimizer.state.get(p, {}).values()]
                for t in tensors:
                    if isinstance(t, torch.Tensor) and t.is_floating_point() and t.dim() > 0:
                        t.masked_fill_(t.abs() < self.threshold, 0.0)

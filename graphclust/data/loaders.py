"""Load a feature matrix (and labels) from a file, a benchmark name or scikit-learn.

:func:`load_dataset` is the one entry point. ``source`` is resolved in this order:

1. ``"digits"``: scikit-learn's bundled 8x8 digits (1797 x 64), pixels scaled to [0, 1].
2. A known benchmark name (case-insensitive): ``"mnist"``, ``"20news"``
   (alias ``"20news_tfidf2000"``), ``"coil20"``, ``"reuters10k"``, ``"har"``.
   The ``.npz`` is looked up in ``data_dir`` (argument, else ``$GRAPHCLUST_DATA_DIR``,
   else ``~/.cache/graphclust``); ``download=True`` fetches a missing one (see
   :mod:`graphclust.data.download`). uint8 images are scaled by 1/255.
3. Anything else is a path: ``.npz`` (arrays ``X``, optional ``y`` and ``shape``),
   ``.npy`` (``X`` only) or ``.csv`` (numbers, optional header row, optional
   label column). A ``pathlib.Path`` is always a path, so ``Path("mnist")`` or
   ``"./mnist"`` reach a file that shares a benchmark's name.

Every ``X`` passes :func:`graphclust.utils.check_features` and comes back as a
C-contiguous float32 ``(n_samples, n_features)`` array without NaN/inf.
"""

from __future__ import annotations

import os
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from graphclust.data import download as _download
from graphclust.utils import (
    GraphclustError,
    check_features,
    check_labels,
    infer_likelihood,
)

__all__ = [
    "DATA_DIR_ENV",
    "LoadedData",
    "available_datasets",
    "default_data_dir",
    "load_dataset",
]

DATA_DIR_ENV = "GRAPHCLUST_DATA_DIR"
"""Environment variable naming the folder that holds the benchmark ``.npz`` files."""

_ALIASES = {"20news_tfidf2000": "20news"}
_IMAGE_SHAPES = {"mnist": (28, 28)}  # used when the file has no ``shape`` array
_SUFFIXES = (".npz", ".npy", ".csv")
_NPZ_MAGIC = b"PK"  # every zip archive, hence every .npz, starts with it
_NPY_MAGIC = b"\x93NUMPY"


@dataclass(frozen=True, eq=False)
class LoadedData:
    """A loaded data set.

    Attributes
    ----------
    X : numpy.ndarray
        ``(n_samples, n_features)`` float32, C-contiguous, finite.
    y : numpy.ndarray or None
        ``(n_samples,)`` int64 class labels, or ``None`` when the source has none.
    name : str
        Data set name, or the file stem.
    image_shape : tuple of int or None
        Shape of one image (``(28, 28)`` for MNIST) when rows are flattened
        images, else ``None``.
    likelihood : {"bernoulli", "gaussian"}
        ``"bernoulli"`` when every value lies in [0, 1], else ``"gaussian"``
        (a hint for the decoder of a VAE).
    source : str
        The file it came from, or ``"sklearn"``.
    """

    X: np.ndarray
    y: np.ndarray | None
    name: str
    image_shape: tuple[int, ...] | None
    likelihood: str
    source: str

    @property
    def n_samples(self) -> int:
        return int(self.X.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.X.shape[1])

    @property
    def n_classes(self) -> int | None:
        """Number of distinct labels, or ``None`` without labels."""
        return None if self.y is None else int(np.unique(self.y).size)

    def __repr__(self) -> str:
        return (
            f"LoadedData(name={self.name!r}, n_samples={self.n_samples}, "
            f"n_features={self.n_features}, n_classes={self.n_classes}, "
            f"image_shape={self.image_shape}, likelihood={self.likelihood!r}, "
            f"source={self.source!r})"
        )


class _Raw(NamedTuple):
    """What a reader found, before validation, prefixing and scaling."""

    X: np.ndarray
    y: np.ndarray | None
    shape: tuple[int, ...] | None


# --------------------------------------------------------------------------- public API
def default_data_dir() -> Path:
    """``$GRAPHCLUST_DATA_DIR`` when set, else ``~/.cache/graphclust``."""
    env = os.environ.get(DATA_DIR_ENV, "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cache" / "graphclust"


def available_datasets() -> dict[str, str]:
    """Names accepted by :func:`load_dataset`, each with a one-line description."""
    out = {"digits": "scikit-learn digits: 1,797 x 64 (8x8 images), 10 classes (bundled)"}
    out.update({name: entry.description for name, entry in _download.REGISTRY.items()})
    return out


def load_dataset(
    source: str | os.PathLike,
    data_dir: str | os.PathLike | None = None,
    *,
    labels: Any = None,
    download: bool = False,
    max_samples: int | None = None,
    label_column: str | int | None = None,
) -> LoadedData:
    """Load a data set by name or from a file.

    Parameters
    ----------
    source : str or path-like
        ``"digits"``, a benchmark name (see :func:`available_datasets`), or the
        path of a ``.npz``, ``.npy`` or ``.csv`` file.
    data_dir : path-like, optional
        Folder of the benchmark ``.npz`` files; default :func:`default_data_dir`.
    labels : array-like or path-like, optional
        Class labels ``(n_samples,)``, or a ``.npy``/``.txt`` file of them (one
        per line); replace labels stored in the source. Their length must match
        the source's rows (or the ``max_samples`` prefix).
    download : bool, default=False
        Download a missing benchmark file into ``data_dir``.
    max_samples : int, optional
        Keep only the first ``max_samples`` rows (deterministic, for quick runs).
    label_column : str or int, optional
        For ``.csv`` files: the column that holds the labels, by header name
        (``"label"``) or position (``-1`` for the last one).

    Returns
    -------
    LoadedData

    Raises
    ------
    GraphclustError
        Unknown name, missing or unreadable file, NaN/inf values, wrong
        dimensions, fewer than 2 samples, labels of the wrong length, ... The
        message says what was found and what to do.
    """
    max_samples = _check_max_samples(max_samples)
    key = _dataset_key(source)
    is_csv = key is None and Path(source).suffix.lower() == ".csv"
    if label_column is not None and not is_csv:
        raise GraphclustError(
            f"label_column applies to .csv files only; {str(source)!r} is not one "
            "(pass labels=... instead)"
        )
    if key == "digits":
        raw, name, where, scale = _load_digits(), "digits", "sklearn", False
    elif key is not None:
        path = _locate_benchmark(key, data_dir, download)
        raw, name, where, scale = _read_file(path), key, str(path), True
        if raw.shape is None and key in _IMAGE_SHAPES:
            raw = raw._replace(shape=_IMAGE_SHAPES[key])
    else:
        path = _existing_file(source)
        raw, name, where, scale = _read_file(path, label_column), path.stem, str(path), False
    return _finish(raw, name, where, scale, labels, max_samples)


# --------------------------------------------------------------------------- resolution
def _dataset_key(source: str | os.PathLike) -> str | None:
    """The registry key for a name given as a plain string, else ``None``."""
    if not isinstance(source, str):
        return None
    text = source.strip().lower()
    text = _ALIASES.get(text, text)
    if text == "digits" or text in _download.REGISTRY:
        return text
    return None


def _unknown_source_message(source: str | os.PathLike) -> str:
    names = ", ".join(sorted(available_datasets()))
    return (
        f"{str(source)!r} is neither a known data set nor an existing file. Known data sets: "
        f"{names}. A path to a {'/'.join(_SUFFIXES)} file is also accepted."
    )


def _existing_file(source: str | os.PathLike) -> Path:
    path = Path(source).expanduser()
    if path.is_dir():
        raise GraphclustError(
            f"{path} is a folder; give a {'/'.join(_SUFFIXES)} file, or pass a folder of "
            "benchmark files as data_dir"
        )
    if not path.is_file():
        if path.suffix.lower() in _SUFFIXES or len(path.parts) > 1:
            raise GraphclustError(f"data file {path} not found (working folder: {Path.cwd()})")
        raise GraphclustError(_unknown_source_message(source))
    if path.suffix.lower() not in _SUFFIXES:
        raise GraphclustError(
            f"cannot read {path}: unsupported file type {path.suffix!r}; "
            f"supported: {', '.join(_SUFFIXES)}"
        )
    return path


def _locate_benchmark(key: str, data_dir: str | os.PathLike | None, download: bool) -> Path:
    entry = _download.REGISTRY[key]
    folder = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    path = folder / entry.npz_name
    if path.is_file():
        return path
    if download:
        return _download.fetch_dataset(key, folder)
    raise GraphclustError(
        f"data set {key!r} needs the file {entry.npz_name}, which was not found; folders "
        f"searched: {folder}. Pass download=True to download it "
        f"({_download.how_to_download(entry)}), "
        "or put the file there, or name the folder that holds it with data_dir=..., the "
        f"--data-dir option of the graphclust command, or the {DATA_DIR_ENV} environment "
        "variable."
    )


# --------------------------------------------------------------------------- readers
def _load_digits() -> _Raw:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return _Raw(bunch.data.astype(np.float32) / np.float32(16.0), bunch.target, (8, 8))


def _read_file(path: Path, label_column: str | int | None = None) -> _Raw:
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return _read_npz(path)
    if suffix == ".npy":
        return _Raw(_read_npy(path), None, None)
    return _read_csv(path, label_column)


def _check_magic(path: Path, magic: bytes, kind: str) -> None:
    with open(path, "rb") as fh:
        head = fh.read(len(magic))
    if head != magic:
        what = "is empty" if not head else "does not start with the expected signature"
        raise GraphclustError(
            f"{path} is not a valid {kind} file (it {what}); re-create it, or, for a "
            "downloaded benchmark, delete it and download it again (download=True)"
        )


def _invalid(path: Path, kind: str, exc: BaseException) -> GraphclustError:
    if "allow_pickle" in str(exc):
        return GraphclustError(
            f"{path} holds object (pickled) arrays, which are not loaded for safety; save X "
            "(and y) as plain numeric arrays"
        )
    return GraphclustError(
        f"{path} is not a valid {kind} file ({type(exc).__name__}: {exc}); it may be truncated "
        "or corrupt. Re-create it, or, for a downloaded benchmark, delete it and download it "
        "again (download=True)"
    )


def _read_npz(path: Path) -> _Raw:
    _check_magic(path, _NPZ_MAGIC, ".npz")
    try:
        archive = np.load(path, allow_pickle=False)
        if isinstance(archive, np.ndarray):  # a .npy saved under a .npz name
            raise GraphclustError(f"{path} holds a single .npy array; rename it to .npy")
        with archive as data:
            names = list(data.files)
            if "X" not in names:
                hint = ""
                if {"indptr", "indices", "format"} <= set(names):
                    hint = (
                        " It looks like a scipy.sparse file: load it with "
                        "scipy.sparse.load_npz and save X=matrix.toarray() instead."
                    )
                raise GraphclustError(
                    f"{path} has no array named 'X'; arrays present: {names}. Save the "
                    f"features as X (np.savez(path, X=X, y=y)).{hint}"
                )
            X = data["X"]
            y = data["y"] if "y" in names else None
            shape = data["shape"] if "shape" in names else None
    except GraphclustError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, OSError, KeyError) as exc:
        raise _invalid(path, ".npz", exc) from exc
    if shape is not None:
        shape = tuple(int(s) for s in np.asarray(shape).ravel())
    return _Raw(X, y, shape)


def _read_npy(path: Path) -> np.ndarray:
    _check_magic(path, _NPY_MAGIC, ".npy")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise _invalid(path, ".npy", exc) from exc


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _read_csv(path: Path, label_column: str | int | None) -> _Raw:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "input contained no data"
            cells = np.loadtxt(
                path, delimiter=",", dtype=str, ndmin=2, encoding="utf-8-sig",
                quotechar='"', comments=None,
            )
    except (ValueError, UnicodeDecodeError) as exc:
        raise GraphclustError(
            f"cannot read {path} as CSV ({exc}); expected comma-separated numbers with the "
            "same number of columns in every row"
        ) from exc
    if cells.size == 0:
        raise GraphclustError(
            f"{path} is empty; expected rows of comma-separated numbers, one per sample "
            "(an optional header row first)"
        )
    cells = np.char.strip(cells)
    header = None
    if not all(_is_number(c) for c in cells[0]):
        header, cells = [str(c) for c in cells[0]], cells[1:]
    if cells.shape[0] == 0:
        raise GraphclustError(f"{path} has a header row but no data rows")
    n_cols = cells.shape[1]
    y = None
    if label_column is not None:
        if isinstance(label_column, str):
            if header is None or label_column not in header:
                found = f"columns: {header}" if header else "the file has no header row"
                raise GraphclustError(
                    f"{path} has no column named {label_column!r} ({found}); name an existing "
                    "column or give its position (e.g. label_column=-1)"
                )
            idx = header.index(label_column)
        else:
            idx = int(label_column)
            if not -n_cols <= idx < n_cols:
                raise GraphclustError(
                    f"label_column={label_column} is out of range for {path}, which has "
                    f"{n_cols} columns"
                )
            idx %= n_cols
        y_cells = cells[:, idx]
        cells = np.delete(cells, idx, axis=1)
        y = y_cells.astype(np.float64) if all(_is_number(c) for c in y_cells) else y_cells
    try:
        X = cells.astype(np.float64)
    except ValueError:
        row, col = next(
            (r, c) for r in range(cells.shape[0]) for c in range(cells.shape[1])
            if not _is_number(cells[r, c])
        )
        raise GraphclustError(
            f"{path}: data row {row + 1}, feature column {col + 1} holds {str(cells[row, col])!r}, "
            "which is not a number; features must be numeric (if it is the label column, "
            "pass label_column=...)"
        ) from None
    return _Raw(X, y, None)


def _read_labels(labels: Any) -> np.ndarray:
    if not isinstance(labels, (str, os.PathLike)):
        return np.asarray(labels)
    path = Path(labels).expanduser()
    if not path.is_file():
        raise GraphclustError(f"labels file {path} not found")
    if path.suffix.lower() == ".npy":
        arr = _read_npy(path)
        return arr.ravel() if arr.ndim == 2 and 1 in arr.shape else arr
    try:
        lines = [ln.strip() for ln in path.read_text(encoding="utf-8-sig").splitlines()]
    except (UnicodeDecodeError, OSError) as exc:
        raise GraphclustError(f"cannot read labels file {path}: {exc}") from exc
    lines = [ln for ln in lines if ln]
    if not lines:
        raise GraphclustError(f"labels file {path} is empty; expected one label per line")
    if all(_is_number(ln) for ln in lines):
        return np.array(lines, dtype=np.float64)
    return np.array(lines)


# --------------------------------------------------------------------------- finishing
def _check_max_samples(max_samples: Any) -> int | None:
    if max_samples is None:
        return None
    if isinstance(max_samples, bool) or not isinstance(max_samples, (int, np.integer)):
        raise GraphclustError(f"max_samples must be a whole number, got {max_samples!r}")
    if max_samples < 2:
        raise GraphclustError(f"max_samples must be at least 2, got {max_samples}")
    return int(max_samples)


def _finish(
    raw: _Raw, name: str, where: str, scale_uint8: bool, labels: Any, max_samples: int | None
) -> LoadedData:
    X = raw.X
    n_total = X.shape[0] if X.ndim >= 1 else 0
    if max_samples is not None and X.ndim >= 1:
        X = X[:max_samples]
    if scale_uint8 and X.dtype == np.uint8:
        X = X.astype(np.float32) / np.float32(255.0)
    X = check_features(X, name=f"X of {name}")
    n = X.shape[0]
    y = raw.y
    if labels is not None:
        y = _read_labels(labels)
        # accept labels for the whole source or for the kept prefix
        if y.ndim == 1 and y.shape[0] == n != n_total:
            n_total = n
    if y is not None:
        y = check_labels(y, n_total, name="labels" if labels is not None else f"y of {name}")
        y = np.ascontiguousarray(y[:n])
    shape = raw.shape
    if shape is not None and int(np.prod(shape)) != X.shape[1]:
        raise GraphclustError(
            f"{name}: image shape {shape} has {int(np.prod(shape))} pixels but X has "
            f"{X.shape[1]} features; fix or drop the 'shape' array"
        )
    return LoadedData(X=X, y=y, name=name, image_shape=shape, likelihood=infer_likelihood(X),
                      source=where)

"""Verified, atomic downloads of benchmark data sets (built on pooch).

:func:`fetch` downloads one file: retried on network failures, checked against a
sha256, and written atomically (pooch streams into a temporary file beside the
destination and moves it into place only after the checksum matched), so a
failed download never leaves a file behind.

:data:`REGISTRY` lists the data sets that :func:`graphclust.data.loaders.load_dataset`
can download, and :func:`fetch_dataset` turns one of them into the cached
``<name>.npz`` (arrays ``X``, ``y``, optional ``shape``) that the loader reads.

Where the files come from
-------------------------
* ``reuters10k``, ``har``: MATLAB files of the VaDE repository at a pinned
  commit, converted to ``.npz`` after the first download (the raw file is kept
  under ``<data_dir>/raw/``).
* ``coil20``: the ``COIL20.mat`` of the DSC-Net repository at a pinned commit,
  converted (images re-ordered to row-major so that ``X[i].reshape(32, 32)`` is
  upright).
* ``mnist``, ``20news``: built from thousands of files (PNGs, text posts), so
  there is no single upstream file to fetch. They download from a mirror that
  holds the finished ``.npz`` files, named by the environment variable
  ``GRAPHCLUST_DATA_URL`` (checked against the sha256 values of
  ``shared/data/README.md``). With the mirror set, ``coil20`` comes from it too.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pooch
import requests

from graphclust.utils import GraphclustError, atomic_path

__all__ = [
    "MIRROR_ENV",
    "REGISTRY",
    "RemoteDataset",
    "RemoteFile",
    "UnverifiedDownloadWarning",
    "convert_coil20",
    "fetch",
    "fetch_dataset",
    "file_sha256",
    "how_to_download",
    "mat_to_arrays",
]

MIRROR_ENV = "GRAPHCLUST_DATA_URL"
"""Environment variable: base URL of a server that holds our ``<name>.npz`` files."""

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
# Failures a later attempt may not repeat; anything else is reported at once.
_TRANSIENT = (
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ContentDecodingError,
)
_RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}


class UnverifiedDownloadWarning(UserWarning):
    """A file was downloaded without a known sha256 to check it against."""


# --------------------------------------------------------------------------- fetch
def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _normalise_sha256(sha256: str | None) -> str | None:
    if sha256 is None:
        return None
    text = str(sha256).strip().lower()
    text = text.removeprefix("sha256:")
    if not _SHA256.match(text):
        raise GraphclustError(
            f"sha256 must be 64 hexadecimal characters (or None when unknown), got {sha256!r}"
        )
    return text


class _ChecksumMismatch(Exception):
    def __init__(self, expected: str, got: str) -> None:
        super().__init__(f"expected {expected}, got {got}")
        self.expected = expected
        self.got = got


class _VerifyingDownloader:
    """pooch's HTTP downloader plus a sha256 check of the temporary file.

    Raising here, inside pooch's temporary-file context, makes pooch delete the
    temporary file before anything is moved to the destination.
    """

    def __init__(self, sha256: str | None, progress: bool, timeout: float) -> None:
        self._http = pooch.HTTPDownloader(progressbar=progress, timeout=timeout)
        self.sha256 = sha256
        self.computed: str | None = None

    def __call__(self, url: str, output_file: str, pooch_obj: object) -> None:
        self._http(url, output_file, pooch_obj)
        self.computed = file_sha256(output_file)
        if self.sha256 is not None and self.computed != self.sha256:
            raise _ChecksumMismatch(self.sha256, self.computed)


def _short(exc: BaseException, limit: int = 300) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _record_unverified(url: str, dest: Path, sha256: str) -> None:
    sidecar = dest.with_name(dest.name + ".sha256")
    with atomic_path(sidecar) as tmp:
        tmp.write_text(f"{sha256}  {dest.name}\n")
    warnings.warn(
        f"downloaded {url} to {dest} without a known sha256, so the file could not be "
        f"verified; its sha256 is {sha256} (recorded in {sidecar.name}). Compare it with a "
        "trusted copy before relying on results from it.",
        UnverifiedDownloadWarning,
        stacklevel=3,
    )


def fetch(
    url: str,
    sha256: str | None,
    dest: str | os.PathLike,
    *,
    retries: int = 3,
    timeout: float = 30.0,
    progress: bool = True,
    backoff: float = 1.0,
) -> Path:
    """Download ``url`` to ``dest``, verified and atomically; reuse a good existing file.

    Parameters
    ----------
    url : str
        HTTP(S) address of the file.
    sha256 : str or None
        Expected sha256 (hex, optionally prefixed ``"sha256:"``). ``None`` when no
        trusted checksum is known: the file is then downloaded unverified, an
        :class:`UnverifiedDownloadWarning` gives its computed sha256, and that
        value is recorded in ``<dest>.sha256``.
    dest : path-like
        Final file path; its folder is created when missing. An existing file
        whose sha256 matches is returned without downloading (with ``sha256=None``
        any existing file is reused).
    retries : int, default=3
        Further attempts after the first when the connection fails, times out,
        breaks off mid-transfer or the server answers 408/429/5xx. A wrong
        checksum or another HTTP error is not retried.
    timeout : float, default=30.0
        Seconds to wait for the server to connect or to send more data.
    progress : bool, default=True
        Show a tqdm progress bar on stderr.
    backoff : float, default=1.0
        Wait ``backoff * 2**k`` seconds before retry ``k + 1``.

    Returns
    -------
    pathlib.Path
        The absolute path of the verified file.

    Raises
    ------
    GraphclustError
        On a checksum mismatch (expected and computed sha256; the download is
        deleted), an HTTP error, a network failure that outlasted the retries,
        or a destination that cannot be written. In every case nothing is left
        at ``dest`` that was not there before, and no temporary file remains.
    """
    expected = _normalise_sha256(sha256)
    if int(retries) != retries or retries < 0:
        raise GraphclustError(f"retries must be a whole number >= 0, got {retries!r}")
    dest = Path(dest).expanduser().absolute()
    if dest.is_dir():
        raise GraphclustError(f"download destination {dest} is a folder; give a file path")
    attempts = int(retries) + 1
    last: BaseException | None = None
    for attempt in range(attempts):
        downloader = _VerifyingDownloader(expected, progress, timeout)
        try:
            out = pooch.retrieve(
                url,
                known_hash=None if expected is None else f"sha256:{expected}",
                fname=dest.name,
                path=dest.parent,
                downloader=downloader,
                progressbar=progress,
            )
        except _ChecksumMismatch as exc:
            raise GraphclustError(
                f"checksum mismatch for {url}: expected sha256 {exc.expected}, got {exc.got}. "
                f"The downloaded file was deleted and nothing was written to {dest}. The server "
                "sent different bytes than the registry expects (a changed or truncated file, "
                "or a proxy error page): try again later, or download it by hand and compare "
                "the checksum."
            ) from None
        except requests.exceptions.HTTPError as exc:
            status = exc.response.status_code if exc.response is not None else None
            if status not in _RETRY_STATUS:
                reason = exc.response.reason if exc.response is not None else ""
                raise GraphclustError(
                    f"download of {url} failed: the server answered HTTP {status} {reason}. "
                    "The address may have moved; check it in a browser, or download the file "
                    f"by hand and save it as {dest}."
                ) from exc
            last = exc
        except _TRANSIENT as exc:
            last = exc
        except requests.exceptions.RequestException as exc:  # bad URL, redirect loop, ...
            raise GraphclustError(f"cannot download {url}: {_short(exc)}") from exc
        except OSError as exc:  # after RequestException, which subclasses OSError
            raise GraphclustError(
                f"cannot write {dest}: {_short(exc)}; check that the folder is writable "
                "and the disk has space"
            ) from exc
        else:
            path = Path(out)
            if expected is None and downloader.computed is not None:
                _record_unverified(url, path, downloader.computed)
            return path
        if attempt + 1 < attempts:
            time.sleep(backoff * 2**attempt)
    hint = f" (its sha256 must be {expected})" if expected else ""
    raise GraphclustError(
        f"could not download {url} after {attempts} attempt(s); last error: {_short(last)}. "
        "Nothing was written. Check the internet connection (and HTTPS_PROXY if you are "
        f"behind a proxy) and try again, or download the file by hand and save it as {dest}"
        f"{hint}."
    )


# --------------------------------------------------------------------------- converters
def _first_key(names: dict, candidates: tuple[str, ...]) -> str | None:
    for key in candidates:
        if key in names:
            return key
    return None


def mat_to_arrays(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a MATLAB ``.mat`` data set into ``{"X": (n_samples, n_features) float32, "y": int64}``.

    Tolerant of common layouts: features in ``X``/``x``/``fea``/``data``/``features``,
    labels in ``Y``/``y``/``gnd``/``labels``/``label``; sparse matrices are made
    dense; samples stored as columns are transposed when the label count says so;
    labels are re-coded to ``0 .. n_classes - 1`` in sorted order (so 1-based
    MATLAB labels become 0-based).

    Raises
    ------
    GraphclustError
        For a Git LFS pointer, a v7.3 (HDF5) file, an unreadable file, or a file
        without a feature matrix (listing the variables it has).
    """
    from scipy import sparse
    from scipy.io import loadmat

    path = Path(path)
    with open(path, "rb") as fh:
        head = fh.read(64)
    if head.startswith(b"version https://git-lfs"):
        raise GraphclustError(
            f"{path} is a Git LFS pointer, not the data; the server did not resolve LFS. "
            "Delete it and download the file from the repository's LFS media URL"
        )
    try:
        mat = loadmat(path)
    except NotImplementedError as exc:  # scipy's message for v7.3 files
        raise GraphclustError(
            f"{path} is a MATLAB v7.3 (HDF5) file, which scipy cannot read; re-save it with "
            "save(..., '-v7') in MATLAB or read it with h5py"
        ) from exc
    except Exception as exc:  # scipy raises ValueError, TypeError, OSError, zlib errors
        raise GraphclustError(
            f"{path} is not a readable MATLAB .mat file ({_short(exc)}); delete it and "
            "download it again"
        ) from exc
    variables = {k: v for k, v in mat.items() if not k.startswith("__")}
    x_key = _first_key(variables, ("X", "x", "fea", "data", "features"))
    if x_key is None:
        raise GraphclustError(
            f"{path} has no feature matrix: expected a variable named X or fea, "
            f"found {sorted(variables)}"
        )
    X = variables[x_key]
    X = X.toarray() if sparse.issparse(X) else np.asarray(X)
    if X.ndim != 2:
        raise GraphclustError(f"{path}: {x_key} must be 2-D, got shape {X.shape}")
    out: dict[str, np.ndarray] = {}
    y_key = _first_key(variables, ("Y", "y", "gnd", "labels", "label"))
    if y_key is not None:
        y = variables[y_key]
        y = y.toarray() if sparse.issparse(y) else np.asarray(y)
        if y.ndim > 2 or (y.ndim == 2 and min(y.shape) != 1):
            raise GraphclustError(
                f"{path}: labels {y_key} must be a vector, got shape {y.shape}"
            )
        y = y.ravel()
        if X.shape[0] != y.size and X.shape[1] == y.size:
            X = X.T  # one sample per column
        if X.shape[0] != y.size:
            raise GraphclustError(
                f"{path}: {x_key} has shape {X.shape} but {y_key} has {y.size} labels"
            )
        out["y"] = np.unique(y, return_inverse=True)[1].astype(np.int64).ravel()
    out["X"] = np.ascontiguousarray(X, dtype=np.float32)
    return out


def convert_coil20(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """COIL-20 ``fea``/``gnd`` .mat -> arrays with upright row-major 32x32 images.

    MATLAB stores each image column by column, so pixel ``(r, c)`` of image
    ``i`` sits at ``fea[i, c * 32 + r]``; the rows are re-ordered so that
    ``X[i].reshape(32, 32)[r, c]`` is that pixel. Adds ``shape = [32, 32]``.
    """
    arrays = mat_to_arrays(path)
    X = arrays["X"]
    if X.shape[1] != 32 * 32:
        raise GraphclustError(f"{path}: expected 1024 pixels (32x32) per image, got {X.shape[1]}")
    arrays["X"] = np.ascontiguousarray(X.reshape(-1, 32, 32).transpose(0, 2, 1).reshape(-1, 1024))
    arrays["shape"] = np.array([32, 32], dtype=np.int64)
    return arrays


# --------------------------------------------------------------------------- registry
class RemoteFile(NamedTuple):
    """One downloadable file: where, its sha256 (``None`` if unknown), its local name."""

    url: str
    sha256: str | None
    filename: str


@dataclass(frozen=True)
class RemoteDataset:
    """A data set the loader can download.

    Attributes
    ----------
    name : str
        Name for :func:`~graphclust.data.loaders.load_dataset`.
    description : str
        One line for listings.
    npz_name : str
        Cache file (arrays ``X``, ``y``, optional ``shape``) in the data folder.
    npz_sha256 : str or None
        sha256 of that ``.npz`` as published in ``shared/data/README.md``; a
        mirror (``$GRAPHCLUST_DATA_URL``) is used only for sets that have one.
    upstream : RemoteFile or None
        The original single file, or ``None`` when the source is many files.
    converter : callable or None
        ``converter(raw_path) -> {"X": ..., "y": ..., ["shape": ...]}`` for ``upstream``.
    provenance : str
        Where the data come from, for error messages and docs.
    """

    name: str
    description: str
    npz_name: str
    npz_sha256: str | None
    upstream: RemoteFile | None
    converter: Callable[[Path], dict[str, np.ndarray]] | None
    provenance: str


_VADE = "https://raw.githubusercontent.com/slim1017/VaDE/eca52b4b57e32a68f578de7a54eda5d39907b0fe"
_DSC = (
    "https://raw.githubusercontent.com/panji530/Deep-subspace-clustering-networks/"
    "4aa83542b8832c2b4586a53aee2c351bc8faf5c0"
)

REGISTRY: dict[str, RemoteDataset] = {
    "mnist": RemoteDataset(
        name="mnist",
        description="MNIST digits: 70,000 x 784 (28x28 images, train then test), 10 classes",
        npz_name="mnist.npz",
        npz_sha256="409118efb571f49d8bd67c1a87ec7c7569959ae3f34256db2a6238c20aeb11dd",
        upstream=None,
        converter=None,
        provenance="built from the 70,000 PNGs of GitHub rasbt/mnist-pngs at commit "
        "d26bd33bf1e454dd15bd4fe8b8ba64c76308f91c",
    ),
    "20news": RemoteDataset(
        name="20news",
        description="20 Newsgroups (bydate) tf-idf: 18,846 x 2,000, 20 classes",
        npz_name="20news_tfidf2000.npz",
        npz_sha256="d47aff7b852f977822fe3cbc0c6b934cf7af4fef7dd2899efe980fc02dcf72d9",
        upstream=None,
        converter=None,
        provenance="built from the 18,846 posts of GitHub YunomiXavia/20news-bydate at commit "
        "2298b3e1c9f66cc3f2d8bf6da5dd68f15b37eb88",
    ),
    "coil20": RemoteDataset(
        name="coil20",
        description="COIL-20 objects: 1,440 x 1,024 (32x32 images), 20 classes",
        npz_name="coil20.npz",
        npz_sha256="f2b91d0911aa205d3b4becacd24ff7beac78fb85917fdd3b973bce1fba49b175",
        upstream=RemoteFile(
            f"{_DSC}/Data/COIL20.mat",
            "2a35c105dbb327492b90389e55612bcbf39187bc7c408252239903e4ce7d6958",
            "COIL20.mat",
        ),
        converter=convert_coil20,
        provenance="Data/COIL20.mat of GitHub panji530/Deep-subspace-clustering-networks",
    ),
    "reuters10k": RemoteDataset(
        name="reuters10k",
        description="Reuters-10k (DEC/VaDE): 10,000 x 2,000 tf-idf, 4 classes (download)",
        npz_name="reuters10k.npz",
        npz_sha256=None,
        upstream=RemoteFile(
            f"{_VADE}/dataset/reuters10k/reuters10k.mat",
            "aa0774a824889efe0597f0d42c6a795c99f312f89819afde957746fb7f0588b1",
            "reuters10k.mat",
        ),
        converter=mat_to_arrays,
        provenance="dataset/reuters10k/reuters10k.mat of GitHub slim1017/VaDE",
    ),
    "har": RemoteDataset(
        name="har",
        description="UCI HAR features (VaDE HHAR): 10,299 x 561, 6 classes (download, unverified)",
        npz_name="har.npz",
        npz_sha256=None,
        # No trusted checksum is published for HAR.mat: downloads are unverified
        # and warn with the computed sha256.
        upstream=RemoteFile(f"{_VADE}/dataset/har/HAR.mat", None, "HAR.mat"),
        converter=mat_to_arrays,
        provenance="dataset/har/HAR.mat of GitHub slim1017/VaDE",
    ),
}


def _mirror_base() -> str | None:
    base = os.environ.get(MIRROR_ENV, "").strip()
    return base.rstrip("/") if base else None


def how_to_download(entry: RemoteDataset) -> str:
    """One sentence on what ``download=True`` does (or needs) for ``entry``."""
    if entry.upstream is not None:
        return f"it comes from {entry.provenance}"
    return (
        f"there is no single upstream file for it ({entry.provenance}), so download=True "
        f"needs a mirror holding {entry.npz_name}: set {MIRROR_ENV} to its base URL; the "
        "development checkout ships a copy in shared/data"
    )


def fetch_dataset(
    name: str,
    data_dir: str | os.PathLike,
    *,
    retries: int = 3,
    timeout: float = 30.0,
    progress: bool = True,
) -> Path:
    """Download registry data set ``name`` into ``data_dir`` as ``<npz_name>``; return its path.

    Uses the mirror in ``$GRAPHCLUST_DATA_URL`` when set and the set has a
    published ``.npz`` checksum; otherwise downloads the upstream file into
    ``data_dir/raw/`` and converts it (the ``.npz`` is written atomically).
    """
    if name not in REGISTRY:
        raise GraphclustError(f"no download is known for {name!r}; known: {sorted(REGISTRY)}")
    entry = REGISTRY[name]
    folder = Path(data_dir).expanduser()
    dest = folder / entry.npz_name
    base = _mirror_base()
    kwargs = dict(retries=retries, timeout=timeout, progress=progress)
    if base is not None and entry.npz_sha256 is not None:
        return fetch(f"{base}/{entry.npz_name}", entry.npz_sha256, dest, **kwargs)
    if entry.upstream is None or entry.converter is None:
        raise GraphclustError(f"cannot download {name!r}: {how_to_download(entry)}")
    raw = fetch(entry.upstream.url, entry.upstream.sha256, folder / "raw" / entry.upstream.filename,
                **kwargs)
    arrays = entry.converter(raw)
    with atomic_path(dest) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, **arrays)
    return dest

"""Synthetic data sets written to disk in blocks, for benchmarks larger than memory.

:func:`write_mixture_npy` writes an ``(n_samples, n_features)`` float32 ``.npy``
of a Gaussian mixture on a low-dimensional latent space, lifted linearly into
``n_features`` dimensions plus isotropic noise (like learned embeddings: high
ambient, low intrinsic dimension). It never holds more than one block of rows.
Block ``b`` is drawn from its own generator ``default_rng([seed, b])``, so the
file depends only on the arguments, not on how it was written.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from graphclust.graph.large import NpyFile
from graphclust.utils import GraphclustError, atomic_path, prepare_output

__all__ = ["write_mixture_npy"]

_BLOCK_ROWS = 65536


def write_mixture_npy(
    path: str | os.PathLike,
    n_samples: int,
    n_features: int = 128,
    *,
    n_clusters: int = 100,
    latent_dim: int = 16,
    separation: float = 4.0,
    noise: float = 0.1,
    random_state: int = 0,
    labels_path: str | os.PathLike | None = None,
    force: bool = False,
) -> Path:
    """Write a seeded Gaussian-mixture data set to ``path`` (``.npy``, float32) in blocks.

    ``z = mu_c + e`` with ``mu_c ~ N(0, separation^2 I)`` and ``e ~ N(0, I)`` in
    ``latent_dim`` dimensions, cluster ``c`` uniform over ``n_clusters``; then
    ``x = z W + noise * N(0, I)`` with a fixed Gaussian ``W`` of shape
    ``(latent_dim, n_features)`` scaled by ``1 / sqrt(latent_dim)``.

    Parameters
    ----------
    path : path-like
        Output ``.npy`` file (written atomically; refused when it exists unless ``force``).
    n_samples, n_features : int
        Shape of the data.
    n_clusters, latent_dim : int
        Mixture components and intrinsic dimension.
    separation, noise : float
        Spread of the cluster means (in units of the cluster std) and the
        ambient noise std.
    random_state : int
        Seed; the same arguments always give the same file.
    labels_path : path-like, optional
        Also write the cluster of every row (``(n_samples,)`` int64 ``.npy``).
    force : bool
        Overwrite existing files.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    for name, value in (("n_samples", n_samples), ("n_features", n_features),
                        ("n_clusters", n_clusters), ("latent_dim", latent_dim)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise GraphclustError(f"{name} must be an integer >= 1, got {value!r}")
    if not (separation >= 0 and noise >= 0):
        raise GraphclustError(f"separation and noise must be >= 0, got {separation}, {noise}")
    path = Path(path)
    if path.suffix != ".npy":
        raise GraphclustError(f"the output must end in .npy, got {path.name!r}")
    prepare_output(path, force=force)
    if labels_path is not None:
        prepare_output(labels_path, force=force)
    base = np.random.default_rng([int(random_state), 2**32 - 1])
    means = base.normal(scale=separation, size=(n_clusters, latent_dim))
    lift = base.normal(size=(latent_dim, n_features)) / np.sqrt(latent_dim)
    labels = np.empty(n_samples, dtype=np.int64) if labels_path is not None else None
    with atomic_path(path) as tmp:
        with NpyFile.create(tmp, (n_samples, n_features), np.float32) as out:
            for b, start in enumerate(range(0, n_samples, _BLOCK_ROWS)):
                rows = min(_BLOCK_ROWS, n_samples - start)
                rng = np.random.default_rng([int(random_state), b])
                c = rng.integers(0, n_clusters, size=rows)
                z = means[c] + rng.normal(size=(rows, latent_dim))
                x = z @ lift + noise * rng.normal(size=(rows, n_features))
                out.write(start, x.astype(np.float32))
                if labels is not None:
                    labels[start : start + rows] = c
        if labels is not None:
            with atomic_path(labels_path) as tmp_labels, open(tmp_labels, "wb") as fh:
                np.save(fh, labels)
    return path

"""Pretraining shared by the mixture models: (denoising) autoencoder, prior init, head.

1. :func:`pretrain_autoencoder` trains encoder means + decoder as a denoising AE.
2. An *initialiser* clusters the latent means and returns :class:`InitResult` (labels and a
   diagonal GMM in the latent space): :class:`GMMInit` (sklearn ``GaussianMixture``, diag,
   the DGG/VaDE recipe) or :class:`UMAPGMMInit` (UMAP + full GMM labels, the N2D recipe;
   design note section 9: the starting point dominates). Any callable
   ``(latent, n_clusters, random_state) -> InitResult`` can be injected.
3. :func:`apply_init` sets the prior; :func:`pretrain_head` fits the classifier head on the
   initial labels.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch
from tqdm.auto import tqdm

from graphclust.models.mixture import GMVAE, ClassifierHead
from graphclust.utils import GraphclustError, SubnormalGuard

__all__ = [
    "GMMInit",
    "InitResult",
    "LabelsInit",
    "UMAPGMMInit",
    "apply_init",
    "latent_means",
    "moments_from_labels",
    "pretrain_autoencoder",
    "pretrain_head",
]


class InitResult(NamedTuple):
    """A clustering of the latent space used to start a mixture model.

    Attributes
    ----------
    labels : ndarray of shape (n_samples,), int64
    means : ndarray of shape (n_clusters, latent_dim)
    variances : ndarray of shape (n_clusters, latent_dim)
        Diagonal variances in the latent space.
    weights : ndarray of shape (n_clusters,)
    """

    labels: np.ndarray
    means: np.ndarray
    variances: np.ndarray
    weights: np.ndarray


Initializer = Callable[[np.ndarray, int, int], InitResult]


def moments_from_labels(
    latent: np.ndarray, labels: np.ndarray, n_clusters: int, min_var: float = 1e-4
) -> InitResult:
    """Per-cluster means and diagonal variances of ``latent`` under hard ``labels``.

    An empty cluster gets the global mean/variance and a tiny weight.
    """
    latent = np.asarray(latent, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    M = latent.shape[1]
    means = np.tile(latent.mean(0), (n_clusters, 1))
    variances = np.tile(latent.var(0) + min_var, (n_clusters, 1))
    counts = np.bincount(labels, minlength=n_clusters)[:n_clusters].astype(np.float64)
    for k in np.flatnonzero(counts):
        rows = latent[labels == k]
        means[k] = rows.mean(0)
        variances[k] = rows.var(0) + min_var if len(rows) > 1 else variances[k]
    weights = np.maximum(counts, 1e-3) / max(counts.sum(), 1.0)
    weights /= weights.sum()
    return InitResult(
        labels, means.astype(np.float32), variances.astype(np.float32).reshape(n_clusters, M),
        weights.astype(np.float32),
    )


class GMMInit:
    """Fit ``sklearn.mixture.GaussianMixture`` on the latent means.

    Parameters
    ----------
    covariance_type : {"diag", "full"}
        ``diag`` gives the prior directly; with ``full`` the labels are kept and the prior
        is the per-cluster diagonal moments.
    n_init : int
    max_iter : int
    reg_covar : float
    """

    def __init__(
        self, covariance_type: str = "diag", n_init: int = 3, max_iter: int = 200,
        reg_covar: float = 1e-6,
    ) -> None:
        self.covariance_type, self.n_init = covariance_type, int(n_init)
        self.max_iter, self.reg_covar = int(max_iter), float(reg_covar)

    def __repr__(self) -> str:
        return (
            f"GMMInit(covariance_type={self.covariance_type!r}, n_init={self.n_init}, "
            f"max_iter={self.max_iter}, reg_covar={self.reg_covar})"
        )

    def __call__(self, latent: np.ndarray, n_clusters: int, random_state: int) -> InitResult:
        from sklearn.mixture import GaussianMixture

        gmm = GaussianMixture(
            n_components=n_clusters, covariance_type=self.covariance_type, n_init=self.n_init,
            max_iter=self.max_iter, reg_covar=self.reg_covar,
            random_state=int(random_state) % 2**32,
        )
        labels = gmm.fit_predict(np.asarray(latent, dtype=np.float64)).astype(np.int64)
        if self.covariance_type != "diag":
            return moments_from_labels(latent, labels, n_clusters)
        return InitResult(
            labels,
            gmm.means_.astype(np.float32),
            gmm.covariances_.astype(np.float32),
            gmm.weights_.astype(np.float32),
        )


class UMAPGMMInit:
    """UMAP of the latent means + a full-covariance GMM: labels of the N2D recipe.

    The prior is set to the per-cluster diagonal moments of the *latent* means under those
    labels (the head, pretrained on the labels, carries most of the clustering).

    Parameters
    ----------
    n_components : int
        UMAP output dimension (design note section 9: 10).
    n_neighbors : int
    min_dist : float
    covariance_type : str
        Of the GMM in UMAP space.
    """

    def __init__(
        self, n_components: int = 10, n_neighbors: int = 20, min_dist: float = 0.0,
        covariance_type: str = "full",
    ) -> None:
        self.n_components, self.n_neighbors = int(n_components), int(n_neighbors)
        self.min_dist, self.covariance_type = float(min_dist), covariance_type

    def __repr__(self) -> str:
        return (
            f"UMAPGMMInit(n_components={self.n_components}, n_neighbors={self.n_neighbors}, "
            f"min_dist={self.min_dist}, covariance_type={self.covariance_type!r})"
        )

    def __call__(self, latent: np.ndarray, n_clusters: int, random_state: int) -> InitResult:
        try:
            import umap
        except ImportError as exc:
            raise GraphclustError(
                "init='umap' needs umap-learn: `pip install umap-learn` (or graphclust[umap]), "
                "or use init='gmm'"
            ) from exc
        from sklearn.mixture import GaussianMixture

        n_components = min(self.n_components, latent.shape[0] - 2)
        reducer = umap.UMAP(
            n_components=n_components, n_neighbors=min(self.n_neighbors, latent.shape[0] - 1),
            min_dist=self.min_dist, random_state=int(random_state) % 2**31,
            n_jobs=1,  # a seeded UMAP is single-threaded anyway; saying so silences its warning
        )
        emb = reducer.fit_transform(np.asarray(latent, dtype=np.float32))
        gmm = GaussianMixture(
            n_components=n_clusters, covariance_type=self.covariance_type,
            random_state=int(random_state) % 2**31,
        )
        labels = gmm.fit_predict(emb).astype(np.int64)
        return moments_from_labels(latent, labels, n_clusters)


class LabelsInit:
    """Start from given labels (e.g. a stronger clustering computed elsewhere)."""

    def __init__(self, labels) -> None:
        self.labels = np.asarray(labels, dtype=np.int64)

    def __repr__(self) -> str:
        import hashlib

        return f"LabelsInit(sha={hashlib.sha256(self.labels.tobytes()).hexdigest()[:12]})"

    def __call__(self, latent: np.ndarray, n_clusters: int, random_state: int) -> InitResult:
        if self.labels.shape != (latent.shape[0],):
            raise GraphclustError(
                f"LabelsInit has {self.labels.shape[0]} labels but the data have "
                f"{latent.shape[0]} rows"
            )
        if self.labels.min() < 0 or self.labels.max() >= n_clusters:
            raise GraphclustError(f"LabelsInit labels must lie in [0, {n_clusters})")
        return moments_from_labels(latent, self.labels, n_clusters)


def _batches(n: int, batch_size: int, generator: torch.Generator | None):
    return torch.randperm(n, generator=generator).split(batch_size)


def pretrain_autoencoder(
    model: GMVAE,
    X: torch.Tensor,
    epochs: int,
    batch_size: int = 256,
    lr: float = 1e-3,
    noise: float = 0.2,
    generator: torch.Generator | None = None,
    verbose: bool = False,
) -> list[float]:
    """Train ``decoder(encoder.mu(corrupt(x)))`` to reconstruct ``x`` (a denoising AE).

    Parameters
    ----------
    model : GMVAE
        Its encoder trunk + mean head and its decoder are trained.
    X : Tensor of shape (n_samples, n_features)
        On the model's device.
    epochs, batch_size, lr :
        Adam optimisation.
    noise : float
        Masking noise: each input value is zeroed with this probability (0: plain AE).
    generator : torch.Generator, optional
        CPU generator for the shuffle and the noise.

    Returns
    -------
    list of float
        Mean negative log-likelihood per epoch.
    """
    if not 0.0 <= noise < 1.0:
        raise GraphclustError(f"noise must lie in [0, 1), got {noise}")
    params = (
        list(model.encoder.trunk.parameters())
        + list(model.encoder.mu.parameters())
        + list(model.decoder.parameters())
    )
    opt = torch.optim.Adam(params, lr=lr)
    guard = SubnormalGuard(opt)
    losses = []
    n = X.shape[0]
    model.train()
    for epoch in range(epochs):
        total = 0.0
        it = _batches(n, batch_size, generator)
        bar = tqdm(it, desc=f"pretrain AE {epoch + 1}/{epochs}", leave=False, disable=not verbose)
        for idx in bar:
            x = X[idx.to(X.device)]
            x_in = x
            if noise > 0:
                keep = torch.rand(x.shape, generator=generator) >= noise
                x_in = x * keep.to(x.device)
            nll = -model.likelihood.log_prob(x, model.autoencode(x_in)).mean()
            opt.zero_grad(set_to_none=True)
            nll.backward()
            opt.step()
            guard.step()
            total += nll.item() * len(idx)
        losses.append(total / n)
        if verbose:
            tqdm.write(f"pretrain AE epoch {epoch + 1}/{epochs}: loss {losses[-1]:.4f}")
    return losses


@torch.no_grad()
def latent_means(model: GMVAE, X: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    """Latent means of every row, shape (n_samples, latent_dim)."""
    model.eval()
    return torch.cat([model.embed(X[s : s + batch_size]) for s in range(0, X.shape[0], batch_size)])


def apply_init(model: GMVAE, init: InitResult, logvar_ratio: float = 0.1) -> None:
    """Set the prior from ``init`` and restart the (untrained) encoder variance head.

    ``log sigma~^2`` becomes the constant ``ln(logvar_ratio * mean prior variance)``, so the
    first samples stay close to the pretrained means.
    """
    model.prior.set_parameters(init.means, init.variances, init.weights)
    model.encoder.reset_logvar(math.log(logvar_ratio * float(np.mean(init.variances))))


def pretrain_head(
    head: ClassifierHead,
    latent: torch.Tensor,
    labels: np.ndarray,
    C: float = 1.0,
    max_iter: int = 500,
) -> float:
    """Fit the classifier head to predict ``labels`` from fixed latent means.

    The head is linear + softmax, i.e. multinomial logistic regression, so it is fitted
    exactly (L-BFGS, ``sklearn.linear_model.LogisticRegression`` on standardised latents,
    deterministic) instead of by thousands of tiny SGD steps, and its weights are copied
    into ``head``.

    Parameters
    ----------
    head : ClassifierHead
    latent : Tensor of shape (n_samples, latent_dim)
    labels : ndarray of shape (n_samples,)
        Initial clusters in ``[0, n_clusters)``.
    C : float
        Inverse L2 strength (scikit-learn's convention: penalty ``||W||^2 / 2C`` against the
        summed log-loss).
    max_iter : int

    Returns
    -------
    float
        Training accuracy of the fitted head on ``labels``.
    """
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    Z = latent.detach().cpu().numpy().astype(np.float64)
    # standardise for a well-conditioned fit; the scaling is folded into W and b below
    loc, scale = Z.mean(0), Z.std(0) + 1e-8
    Z = (Z - loc) / scale
    y = np.asarray(labels, dtype=np.int64)
    K = head.linear.out_features
    classes = np.unique(y)
    W = np.zeros((K, Z.shape[1]))
    b = np.full(K, -30.0)  # clusters without members stay (almost) empty
    if classes.size == 1:
        b[classes[0]] = 0.0
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            lr = LogisticRegression(C=C, max_iter=max_iter).fit(Z, y)
        if classes.size == 2:  # scikit-learn stores one row: logits (0, w.z + b) for (c0, c1)
            W[classes[1]], b[classes[1]] = lr.coef_[0], lr.intercept_[0]
            b[classes[0]] = 0.0
        else:
            W[classes], b[classes] = lr.coef_, lr.intercept_
    W, b = W / scale, b - (W / scale) @ loc
    with torch.no_grad():
        head.linear.weight.copy_(torch.as_tensor(W, dtype=torch.float32))
        head.linear.bias.copy_(torch.as_tensor(b, dtype=torch.float32))
        pred = head.log_gamma(latent, latent, None).argmax(1).cpu().numpy()
    return float(np.mean(pred == y))

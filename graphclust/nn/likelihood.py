"""Decoder likelihoods ``ln p(x | decoder output)``: Bernoulli (logits), Gaussian (mean) and
multinomial (logits over the features: word counts or tf-idf rows of text).

A likelihood is a small strategy object injected into the mixture models and the DGG
objective. ``log_prob`` works row by row, so the same call scores a node's own
reconstruction (``ln p(x_i | x^(z_i))``) and a neighbour's (``ln p(x_i | x^(z_j))``).
Constants are kept (the Gaussian normaliser), so objectives built from it are exact
log-likelihood bounds and comparable across models.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from graphclust.utils import GraphclustError, infer_likelihood

__all__ = [
    "LIKELIHOODS",
    "BernoulliLikelihood",
    "GaussianLikelihood",
    "LearnedStdGaussianLikelihood",
    "Likelihood",
    "MultinomialLikelihood",
    "get_likelihood",
    "infer_likelihood",
]


class Likelihood:
    """Base class: maps a decoder output to a per-row log-likelihood of ``x``.

    Subclasses define :meth:`log_prob` and :meth:`mean`; ``name`` is the string used at
    the CLI/config edge.
    """

    name = "base"

    def log_prob(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """``ln p(x | out)`` summed over features.

        Parameters
        ----------
        x : Tensor of shape (n, n_features)
        out : Tensor of shape (n, n_features)
            Decoder output (row ``r`` of ``out`` scores row ``r`` of ``x``).

        Returns
        -------
        Tensor of shape (n,)
        """
        raise NotImplementedError

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        """The reconstruction ``E[x | out]`` (for display and MSE reports)."""
        raise NotImplementedError

    def check_data(self, X: np.ndarray) -> None:
        """Raise :class:`GraphclustError` if ``X`` cannot be modelled by this likelihood."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class BernoulliLikelihood(Likelihood):
    """Independent Bernoulli pixels with decoder logits ``l``.

    ``ln p(x | l) = sum_d x_d ln sigmoid(l_d) + (1 - x_d) ln(1 - sigmoid(l_d))``, the
    negative binary cross-entropy; used (as in DEC/VaDE/DGG) for any data in ``[0, 1]``,
    grey values included, with no further normaliser.
    """

    name = "bernoulli"

    def log_prob(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        return -F.binary_cross_entropy_with_logits(out, x, reduction="none").sum(-1)

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(out)

    def check_data(self, X: np.ndarray) -> None:
        lo, hi = float(np.min(X)), float(np.max(X))
        if lo < 0.0 or hi > 1.0:
            raise GraphclustError(
                f"the Bernoulli likelihood needs data in [0, 1], but X lies in [{lo:.4g}, {hi:.4g}]; "
                "rescale X (e.g. divide pixels by 255) or use likelihood='gaussian'"
            )


class GaussianLikelihood(Likelihood):
    """Independent Gaussians with decoder mean ``m`` and one fixed standard deviation.

    ``ln p(x | m) = -1/2 sum_d [ (x_d - m_d)^2 / scale^2 + ln(2 pi scale^2) ]``.

    Parameters
    ----------
    scale : float
        Observation noise standard deviation (the data's units).
    """

    name = "gaussian"

    def __init__(self, scale: float = 1.0) -> None:
        if not scale > 0:
            raise GraphclustError(f"scale must be > 0, got {scale}")
        self.scale = float(scale)
        self._log_norm = math.log(2.0 * math.pi * self.scale**2)

    def log_prob(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        return -0.5 * (((x - out) / self.scale) ** 2 + self._log_norm).sum(-1)

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        return out

    def __repr__(self) -> str:
        return f"GaussianLikelihood(scale={self.scale})"


class LearnedStdGaussianLikelihood(Likelihood):
    """Independent Gaussians whose mean *and* standard deviation come from the decoder.

    The decoder emits ``2 * n_features`` values per row, ``[m, s]``; the standard deviation is
    ``sigma = softplus(s) + eps`` (the slides' GMVAE, seed 001: the floor ``eps`` is annealed
    from large to small during training, see :class:`graphclust.models.nvisa.StdAnnealing`).

    ``ln p(x | m, s) = -1/2 sum_d [ (x_d - m_d)^2 / sigma_d^2 + 2 ln sigma_d + ln 2 pi ]``.

    Parameters
    ----------
    eps : float
        Floor of the standard deviation (data units), > 0.
    """

    name = "gaussian-std"
    #: decoder outputs per feature (mean and raw standard deviation)
    params_per_feature = 2

    def __init__(self, eps: float = 0.01) -> None:
        self.eps = float(eps)
        if not self.eps > 0:
            raise GraphclustError(f"eps must be > 0, got {eps}")

    def std(self, out: torch.Tensor) -> torch.Tensor:
        """``softplus(s) + eps`` of a decoder output ``[m, s]``."""
        return F.softplus(out.chunk(2, dim=-1)[1]) + self.eps

    def log_prob(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        if out.shape[-1] != 2 * x.shape[-1]:
            raise GraphclustError(
                f"LearnedStdGaussianLikelihood needs 2 decoder outputs per feature (mean and "
                f"std), got {out.shape[-1]} for {x.shape[-1]} features"
            )
        mean, raw = out.chunk(2, dim=-1)
        sigma = F.softplus(raw) + self.eps
        return -(0.5 * ((x - mean) / sigma) ** 2 + sigma.log() + 0.5 * math.log(2.0 * math.pi)).sum(-1)

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        return out.chunk(2, dim=-1)[0]

    def __repr__(self) -> str:
        return f"LearnedStdGaussianLikelihood(eps={self.eps})"


class MultinomialLikelihood(Likelihood):
    """A multinomial over the features with decoder logits ``l``: the text likelihood.

    Each row is read as (soft) counts ``c = scale * x`` of ``n = sum_d c_d`` draws from the
    distribution ``p = softmax(l)`` over the features (words), as in topic-model VAEs:

    ``ln p(x | l) = ln Gamma(n + 1) - sum_d ln Gamma(c_d + 1) + sum_d c_d ln p_d``.

    The Gamma terms (the multinomial coefficient, continued to real counts) depend on ``x``
    only; they are kept so that objectives stay comparable across models. Unlike the
    Bernoulli likelihood, the features compete for probability mass, so a decoder must say
    *which* words a document uses, not only how likely each word is on its own; absent words
    (``c_d = 0``) cost nothing. Never chosen by ``"auto"``: pass ``likelihood="multinomial"``
    for counts or tf-idf rows.

    Parameters
    ----------
    scale : float
        Multiplies ``x`` into counts (> 0). With raw word counts keep 1; with L2-normalised
        tf-idf rows (row sums of about 5-13 on 20 Newsgroups) it sets how strongly
        reconstruction weighs against the latent KL terms.
    """

    name = "multinomial"

    def __init__(self, scale: float = 1.0) -> None:
        if not (math.isfinite(scale) and scale > 0):
            raise GraphclustError(f"scale must be a finite number > 0, got {scale}")
        self.scale = float(scale)

    def log_prob(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        c = x * self.scale
        coef = torch.lgamma(c.sum(-1) + 1.0) - torch.lgamma(c + 1.0).sum(-1)
        return coef + (c * F.log_softmax(out, dim=-1)).sum(-1)

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        """The word distribution ``softmax(l)`` (a row's expected counts divided by ``n``)."""
        return F.softmax(out, dim=-1)

    def check_data(self, X: np.ndarray) -> None:
        lo = float(np.min(X))
        if lo < 0.0:
            raise GraphclustError(
                f"the multinomial likelihood needs counts or weights >= 0, but X has a minimum of "
                f"{lo:.4g}; use likelihood='gaussian' for signed data"
            )

    def __repr__(self) -> str:
        return f"MultinomialLikelihood(scale={self.scale})"


LIKELIHOODS = {"bernoulli": BernoulliLikelihood, "gaussian": GaussianLikelihood,
               "multinomial": MultinomialLikelihood}


def get_likelihood(spec: str | Likelihood | None, X: np.ndarray | None = None,
                   scale: float | None = None) -> Likelihood:
    """Resolve ``"auto"`` / a name / a :class:`Likelihood` object, checking it against ``X``.

    Parameters
    ----------
    spec : {"auto", "bernoulli", "gaussian", "multinomial"}, Likelihood or None
        ``"auto"`` (or None) picks Bernoulli for data in ``[0, 1]``, else Gaussian;
        ``"multinomial"`` (text) is only used when asked for.
    X : ndarray of shape (n_samples, n_features), optional
        Data to infer from and to check.
    scale : float, optional
        The named likelihood's ``scale`` (Gaussian: the noise std; multinomial: counts per
        unit of ``x``). None keeps its default; the Bernoulli likelihood has none.
    """
    if isinstance(spec, Likelihood):
        if scale is not None:
            raise GraphclustError("scale applies to a likelihood given by name, not to an object")
        lik = spec
    else:
        name = "auto" if spec is None else str(spec).lower()
        if name == "auto":
            if X is None:
                raise GraphclustError("likelihood='auto' needs the data to choose from")
            name = infer_likelihood(X)
        if name not in LIKELIHOODS:
            raise GraphclustError(
                f"unknown likelihood {spec!r}; expected 'auto', "
                + ", ".join(repr(k) for k in LIKELIHOODS)
            )
        if scale is None:
            lik = LIKELIHOODS[name]()
        elif name in ("gaussian", "multinomial"):
            lik = LIKELIHOODS[name](scale=float(scale))
        else:
            raise GraphclustError(f"the {name} likelihood has no scale (got scale={scale}); "
                                  "scale applies to 'gaussian' and 'multinomial'")
    if X is not None:
        lik.check_data(X)
    return lik

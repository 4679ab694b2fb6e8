"""Gaussian-mixture VAE pieces shared by every mixture model (DGG, VaDE, later GMVAE, k-DVAE).

- :class:`GaussianMixturePrior`: ``p(z | c = k) = N(mu_k, diag sigma_k^2)`` with learnable
  means, log-variances and one global mixing vector.
- Cluster posteriors ``gamma = q(c | x)`` behind one interface (``log_gamma(mu, z, prior)``):
  :class:`ClassifierHead` (linear + softmax on the latent mean, DGG's reference) and
  :class:`GMMPosterior` (VaDE's ``gamma_k ∝ pi_k N(z; mu_k, sigma_k^2)``).
- :class:`GMVAE`: encoder + decoder + prior + posterior + likelihood; computes the
  node-level terms once per node (:class:`NodeTerms`) that the DGG objective combines.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from graphclust.nn.likelihood import Likelihood
from graphclust.nn.mlp import Decoder, GaussianEncoder, check_hidden, init_linear
from graphclust.utils import GraphclustError

__all__ = [
    "GMVAE",
    "POSTERIORS",
    "ClassifierHead",
    "ClusterPosterior",
    "GMMPosterior",
    "GaussianMixturePrior",
    "NodeTerms",
    "build_gmvae",
]

_LOG_2PI = math.log(2.0 * math.pi)


class GaussianMixturePrior(nn.Module):
    """Diagonal Gaussian mixture in latent space.

    Parameters
    ----------
    n_clusters : int
    latent_dim : int

    Attributes
    ----------
    means : Parameter of shape (n_clusters, latent_dim)
    log_vars : Parameter of shape (n_clusters, latent_dim)
    mixing_logits : Parameter of shape (n_clusters,)
        Global mixing vector ``pi = softmax(mixing_logits)``.
    """

    def __init__(self, n_clusters: int, latent_dim: int) -> None:
        super().__init__()
        self.n_clusters, self.latent_dim = int(n_clusters), int(latent_dim)
        self.means = nn.Parameter(torch.zeros(n_clusters, latent_dim))
        self.log_vars = nn.Parameter(torch.zeros(n_clusters, latent_dim))
        self.mixing_logits = nn.Parameter(torch.zeros(n_clusters))

    @torch.no_grad()
    def set_parameters(self, means, variances, weights) -> None:
        """Initialise from a fitted diagonal GMM (arrays of shapes (K, M), (K, M), (K,))."""
        K, M = self.n_clusters, self.latent_dim
        means = torch.as_tensor(np.asarray(means), dtype=torch.float32)
        variances = torch.as_tensor(np.asarray(variances), dtype=torch.float32)
        weights = torch.as_tensor(np.asarray(weights), dtype=torch.float32)
        if means.shape != (K, M) or variances.shape != (K, M) or weights.shape != (K,):
            raise GraphclustError(
                f"GMM parameters have shapes {tuple(means.shape)}, {tuple(variances.shape)}, "
                f"{tuple(weights.shape)}; expected ({K}, {M}), ({K}, {M}), ({K},)"
            )
        if (variances <= 0).any() or (weights < 0).any():
            raise GraphclustError("GMM variances must be > 0 and weights >= 0")
        self.means.copy_(means)
        self.log_vars.copy_(variances.log())
        self.mixing_logits.copy_((weights / weights.sum()).clamp_min(1e-10).log())

    def log_weights(self) -> Tensor:
        """``ln pi``, shape (n_clusters,)."""
        return torch.log_softmax(self.mixing_logits, dim=0)

    def component_log_prob(self, z: Tensor) -> Tensor:
        """``ln N(z_n; mu_k, diag sigma_k^2)``, shape (n, n_clusters)."""
        diff = z.unsqueeze(1) - self.means  # (n, K, M)
        return -0.5 * (_LOG_2PI + self.log_vars + diff.pow(2) / self.log_vars.exp()).sum(-1)

    def log_posterior(self, z: Tensor) -> Tensor:
        """``ln p(c = k | z)`` under the global mixing vector, shape (n, n_clusters)."""
        return torch.log_softmax(self.log_weights() + self.component_log_prob(z), dim=-1)

    def latent_term(self, mu: Tensor, logvar: Tensor, gamma: Tensor, log_gamma: Tensor) -> Tensor:
        """``A_j`` of the design note: every part of the ELBO that depends on node ``j`` alone
        except the reconstruction and the mixing prior.

        ``A = -1/2 sum_k gamma_k sum_m (ln sigma_km^2 + s_m^2/sigma_km^2 + (mu_m - mu_km)^2/sigma_km^2)
              - sum_k gamma_k ln gamma_k + 1/2 sum_m (1 + ln s_m^2)``
        (the ``ln 2 pi`` of the prior and of the entropy of ``q(z|x)`` cancel).

        Parameters
        ----------
        mu, logvar : Tensor of shape (n, latent_dim)
            ``q(z | x) = N(mu, diag exp(logvar))``.
        gamma, log_gamma : Tensor of shape (n, n_clusters)

        Returns
        -------
        Tensor of shape (n,)
        """
        inv_var = (-self.log_vars).exp()  # (K, M)
        var = logvar.exp()  # (n, M)
        # sum_m (mu_m - mu_km)^2 / s_km^2 expanded into matmuls: no (n, K, M) tensor
        quad = (
            (mu * mu) @ inv_var.T
            - 2.0 * mu @ (self.means * inv_var).T
            + (self.means * self.means * inv_var).sum(-1)
        )
        per_k = self.log_vars.sum(-1) + var @ inv_var.T + quad  # (n, K)
        expected_log_prior = -0.5 * (gamma * per_k).sum(-1)
        entropy_c = -(gamma * log_gamma).sum(-1)
        entropy_z = 0.5 * (1.0 + logvar).sum(-1)
        return expected_log_prior + entropy_c + entropy_z


class ClusterPosterior(nn.Module):
    """Interface: ``log_gamma(mu, z, prior) -> ln q(c | x)`` of shape (n, n_clusters)."""

    name = "base"

    def log_gamma(self, mu: Tensor, z: Tensor, prior: GaussianMixturePrior) -> Tensor:
        raise NotImplementedError


class ClassifierHead(ClusterPosterior):
    """``gamma = softmax(W mu + b)`` on the latent mean (DGG's reference classifier ``f2``)."""

    name = "head"

    def __init__(self, latent_dim: int, n_clusters: int, generator: torch.Generator | None = None):
        super().__init__()
        self.linear = init_linear(latent_dim, n_clusters, generator)

    def log_gamma(self, mu: Tensor, z: Tensor, prior: GaussianMixturePrior) -> Tensor:
        return torch.log_softmax(self.linear(mu), dim=-1)


class GMMPosterior(ClusterPosterior):
    """VaDE's posterior ``gamma_k ∝ pi_k N(z; mu_k, sigma_k^2)`` (global ``pi``; ``z`` is a sample
    during training and the mean at prediction)."""

    name = "gmm"

    def log_gamma(self, mu: Tensor, z: Tensor, prior: GaussianMixturePrior) -> Tensor:
        return prior.log_posterior(z)


POSTERIORS = {"head": ClassifierHead, "gmm": GMMPosterior}


class NodeTerms(NamedTuple):
    """Node-level quantities of one batch, computed once per node.

    Attributes
    ----------
    mu, logvar : Tensor of shape (n, latent_dim)
    recon : Tensor of shape (n, n_features)
        Decoder output of one sample ``z ~ q(z | x)`` (of ``mu`` when not sampling).
    log_gamma, gamma : Tensor of shape (n, n_clusters)
    latent_term : Tensor of shape (n,)
        ``A`` of the design note.
    """

    mu: Tensor
    logvar: Tensor
    recon: Tensor
    log_gamma: Tensor
    gamma: Tensor
    latent_term: Tensor


class GMVAE(nn.Module):
    """A Gaussian-mixture VAE: encoder, decoder, GMM prior, cluster posterior, likelihood.

    Parameters
    ----------
    encoder : GaussianEncoder
    decoder : Decoder
    prior : GaussianMixturePrior
    posterior : ClusterPosterior
    likelihood : Likelihood
    """

    def __init__(
        self,
        encoder: GaussianEncoder,
        decoder: Decoder,
        prior: GaussianMixturePrior,
        posterior: ClusterPosterior,
        likelihood: Likelihood,
    ) -> None:
        super().__init__()
        self.encoder, self.decoder, self.prior, self.posterior = encoder, decoder, prior, posterior
        self.likelihood = likelihood

    @property
    def n_clusters(self) -> int:
        return self.prior.n_clusters

    def node_terms(
        self, x: Tensor, sample: bool = True, generator: torch.Generator | None = None,
        noise: Tensor | None = None,
    ) -> NodeTerms:
        """Encoder, one reparameterised sample, decoder, ``gamma`` and ``A`` for every row of ``x``.

        Parameters
        ----------
        x : Tensor of shape (n, n_features)
        sample : bool
            Draw ``z = mu + sigma * eps`` (training); else use ``z = mu``.
        generator : torch.Generator, optional
            Source of ``eps`` (on ``x``'s device).
        noise : Tensor of shape (n, latent_dim), optional
            ``eps`` drawn by the caller (used instead of ``generator``; data-parallel
            training draws it for a whole batch and hands each rank its rows).
        """
        mu, logvar = self.encoder(x)
        if sample and noise is not None:
            if noise.shape != mu.shape:
                raise GraphclustError(
                    f"noise has shape {tuple(noise.shape)}, expected {tuple(mu.shape)} "
                    "(one latent sample per row of x)"
                )
            z = mu + (0.5 * logvar).exp() * noise
        elif sample:
            eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
            z = mu + (0.5 * logvar).exp() * eps
        else:
            z = mu
        recon = self.decoder(z)
        log_gamma = self.posterior.log_gamma(mu, z, self.prior)
        gamma = log_gamma.exp()
        latent_term = self.prior.latent_term(mu, logvar, gamma, log_gamma)
        return NodeTerms(mu, logvar, recon, log_gamma, gamma, latent_term)

    def log_gamma(self, x: Tensor) -> Tensor:
        """``ln q(c | x)`` from the latent mean (prediction), shape (n, n_clusters)."""
        mu = self.encoder.embed(x)
        return self.posterior.log_gamma(mu, mu, self.prior)

    def embed(self, x: Tensor) -> Tensor:
        """Latent means, shape (n, latent_dim)."""
        return self.encoder.embed(x)

    def autoencode(self, x: Tensor) -> Tensor:
        """Decoder output of the latent mean (the deterministic autoencoder of pretraining)."""
        return self.decoder(self.encoder.embed(x))


def build_gmvae(
    in_dim: int,
    n_clusters: int,
    likelihood: Likelihood,
    latent_dim: int = 10,
    hidden: Sequence[int] = (500, 500, 2000),
    posterior: str | ClusterPosterior = "head",
    generator: torch.Generator | None = None,
) -> GMVAE:
    """The standard GMVAE: encoder ``in_dim-hidden-latent``, mirrored decoder.

    Parameters
    ----------
    in_dim : int
    n_clusters : int
    likelihood : Likelihood
    latent_dim : int
    hidden : sequence of int
        Encoder widths; the decoder uses them reversed.
    posterior : {"head", "gmm"} or ClusterPosterior
    generator : torch.Generator, optional
        Initial weights (encoder, decoder, head, in that order).
    """
    hidden = check_hidden(hidden)
    if int(latent_dim) < 1:
        raise GraphclustError(f"latent_dim must be >= 1, got {latent_dim}")
    encoder = GaussianEncoder(in_dim, hidden, latent_dim, generator)
    decoder = Decoder(latent_dim, hidden[::-1], in_dim, generator)
    prior = GaussianMixturePrior(n_clusters, latent_dim)
    if isinstance(posterior, ClusterPosterior):
        post = posterior
    elif posterior == "head":
        post = ClassifierHead(latent_dim, n_clusters, generator)
    elif posterior == "gmm":
        post = GMMPosterior()
    else:
        raise GraphclustError(f"unknown posterior {posterior!r}; expected 'head' or 'gmm'")
    return GMVAE(encoder, decoder, prior, post, likelihood)

"""The Gaussian-mixture VAE of the slides (seed 001, "NVISA"): ``q(z | y, x)``, VIMCO, std annealing.

Generative model: ``y ~ Cat(pi)``, ``z | y ~ N(mu_y, diag sigma_y^2)`` (the shared
:class:`~graphclust.models.mixture.GaussianMixturePrior`), ``x | z ~ p_theta(x | z)`` (one
decoder). Variational model without the mean-field assumption:

    q(y, z | x) = q(y | x) q(z | y, x),
    q(y | x)    = softmax(W mu(x) + b)           (a classifier head on the encoder's mean),
    q(z | y, x) = N(m_y(x), diag s_y(x)^2),      s_y = softplus(.) + eps_z,

``m_y`` and ``s_y`` being ``k`` linear heads on the encoder trunk. Training maximises the
VIMCO bound with ``M`` samples ``(y_m, z_m) ~ q(y, z | x)`` (:func:`graphclust.nn.vimco.vimco_terms`):
``z`` is reparameterised, ``y`` gets the score-function gradient with VIMCO's leave-one-out
baseline. *Std annealing*: the floors ``eps_z`` of ``s_y`` and ``eps_x`` of the decoder's
standard deviation (:class:`~graphclust.nn.likelihood.LearnedStdGaussianLikelihood`) decay
from ``start`` to ``end`` during training (:class:`StdAnnealing`).

For the graph regulariser the model enumerates ``y`` (the slides' "EnumY" ELBO): one
``z_y ~ q(z | y, x_j)`` per cluster, decoded, weighted by ``q(y | x_j)``, with
``A_j = -sum_y q(y | x_j) KL(q(z | y, x_j) || p(z | y)) + H(q(y | x_j))``.

Start (the slides: "pretrained AE + GMM as an initialisation"): the shared denoising AE
trains the encoder trunk, mean head and decoder; a GMM on the latent means sets the prior;
the head is fitted to the GMM labels; every ``m_y`` starts as the AE's mean head.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from graphclust.models.mixture import ClassifierHead, GaussianMixturePrior
from graphclust.models.pretrain import InitResult, pretrain_head
from graphclust.nn.graph_reg import GraphTerms
from graphclust.nn.likelihood import LearnedStdGaussianLikelihood, Likelihood
from graphclust.nn.mlp import Decoder, GaussianEncoder, check_hidden, init_linear
from graphclust.nn.vimco import vimco_terms
from graphclust.utils import GraphclustError

__all__ = [
    "NVISA",
    "ConditionalPosterior",
    "NVISARecipe",
    "StdAnnealing",
    "build_nvisa",
    "gaussian_kl",
    "gaussian_log_prob",
]

_LOG_2PI = math.log(2.0 * math.pi)


@dataclass(frozen=True)
class StdAnnealing:
    """Linear decay of a standard-deviation floor: ``start`` at epoch 0 to ``end``.

    Attributes
    ----------
    start, end : float
        Floors at the first epoch and from ``epochs`` on (``start >= end > 0``).
    epochs : int or None
        Length of the decay (``None``: the whole training).
    """

    start: float = 0.5
    end: float = 0.01
    epochs: int | None = None

    def validate(self) -> None:
        if not (self.start >= self.end > 0):
            raise GraphclustError(
                f"std annealing needs start >= end > 0, got start={self.start}, end={self.end}"
            )
        if self.epochs is not None and self.epochs < 1:
            raise GraphclustError(f"anneal epochs must be >= 1 or None, got {self.epochs}")

    def value(self, epoch: int, n_epochs: int) -> float:
        """The floor in epoch ``epoch`` (0-based) of ``n_epochs``."""
        length = self.epochs if self.epochs is not None else max(int(n_epochs), 1)
        frac = min(max(epoch / length, 0.0), 1.0)
        return self.end + (self.start - self.end) * (1.0 - frac)


def gaussian_log_prob(z: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """``ln N(z; mean, diag std^2)`` summed over the last dimension."""
    return -(0.5 * ((z - mean) / std) ** 2 + std.log() + 0.5 * _LOG_2PI).sum(-1)


def gaussian_kl(mean: Tensor, std: Tensor, prior_mean: Tensor, prior_logvar: Tensor) -> Tensor:
    """``KL(N(mean, std^2) || N(prior_mean, exp(prior_logvar)))`` summed over the last dimension."""
    var = std.pow(2)
    return 0.5 * (prior_logvar - var.log() + (var + (mean - prior_mean) ** 2) / prior_logvar.exp()
                  - 1.0).sum(-1)


class ConditionalPosterior(NamedTuple):
    """``q(y | x)`` and ``q(z | y, x)`` of a batch.

    Attributes
    ----------
    log_qy : Tensor of shape (n, n_clusters)
    mean, std : Tensor of shape (n, n_clusters, latent_dim)
    """

    log_qy: Tensor
    mean: Tensor
    std: Tensor


class NVISA(nn.Module):
    """GMVAE with ``q(z | y, x)``, trained with VIMCO and std annealing (module docstring).

    Parameters
    ----------
    encoder : GaussianEncoder
        Trunk and mean head (pretrained as an autoencoder); its variance head is unused.
    decoder : Decoder
    prior : GaussianMixturePrior
    head : ClassifierHead
        ``q(y | x)`` on the encoder's mean.
    likelihood : Likelihood
    n_samples : int
        VIMCO samples ``M`` per row (slides: 15).
    annealing : StdAnnealing
    generator : torch.Generator, optional
        Initial weights of the conditional heads.
    """

    def __init__(
        self,
        encoder: GaussianEncoder,
        decoder: Decoder,
        prior: GaussianMixturePrior,
        head: ClassifierHead,
        likelihood: Likelihood,
        n_samples: int = 15,
        annealing: StdAnnealing = StdAnnealing(),
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if int(n_samples) < 2:
            raise GraphclustError(f"VIMCO needs n_samples >= 2, got {n_samples}")
        annealing.validate()
        self.encoder, self.decoder, self.prior, self.head = encoder, decoder, prior, head
        self.likelihood = likelihood
        self.n_samples, self.annealing = int(n_samples), annealing
        K, M = prior.n_clusters, prior.latent_dim
        width = encoder.hidden[-1] if encoder.hidden else encoder.in_dim
        self.cond_mean = init_linear(width, K * M, generator)
        self.cond_std = init_linear(width, K * M, generator)
        self.eps_z = float(annealing.start)
        self._set_eps(annealing.start)

    @property
    def n_clusters(self) -> int:
        return self.prior.n_clusters

    def _set_eps(self, value: float) -> None:
        self.eps_z = float(value)
        if isinstance(self.likelihood, LearnedStdGaussianLikelihood):
            self.likelihood.eps = float(value)

    def start_epoch(self, epoch: int, n_epochs: int) -> None:
        """Set ``eps_z`` (and the decoder's ``eps_x``) for this epoch."""
        self._set_eps(self.annealing.value(epoch, n_epochs))

    def log_prior(self) -> Tensor:
        return self.prior.log_weights()

    # ------------------------------------------------------------------ posterior
    def conditional(self, x: Tensor) -> ConditionalPosterior:
        """``q(y | x)`` and every ``q(z | y, x)`` of the rows of ``x``."""
        h = self.encoder.trunk(x)
        mu = self.encoder.mu(h)
        n, K, M = x.shape[0], self.n_clusters, self.prior.latent_dim
        log_qy = self.head.log_gamma(mu, mu, self.prior)
        mean = self.cond_mean(h).view(n, K, M)
        std = F.softplus(self.cond_std(h)).view(n, K, M) + self.eps_z
        return ConditionalPosterior(log_qy, mean, std)

    def log_weights(
        self, x: Tensor, post: ConditionalPosterior, y: Tensor, eps: Tensor
    ) -> tuple[Tensor, Tensor]:
        """``ln w`` and ``ln q(y | x)`` of given samples.

        Parameters
        ----------
        x : Tensor of shape (n, n_features)
        post : ConditionalPosterior
        y : LongTensor of shape (n, S)
            Sampled clusters.
        eps : Tensor of shape (n, S, latent_dim)
            Standard normal noise: ``z = m_y(x) + s_y(x) * eps``.

        Returns
        -------
        log_w, log_qy : Tensor of shape (n, S)
        """
        n, S = y.shape
        M = self.prior.latent_dim
        idx = y.unsqueeze(-1).expand(n, S, M)
        mean, std = post.mean.gather(1, idx), post.std.gather(1, idx)
        z = mean + std * eps
        recon = self.decoder(z.reshape(n * S, M)).view(n, S, -1)
        log_px = self.likelihood.log_prob(x.unsqueeze(1).expand(n, S, -1), recon)
        log_pz = self.prior.component_log_prob(z.reshape(n * S, M)).view(n, S, -1).gather(
            2, y.unsqueeze(-1)).squeeze(-1)
        log_py = self.prior.log_weights()[y]
        log_qz = gaussian_log_prob(z, mean, std)
        log_qy = post.log_qy.gather(1, y)
        return log_px + log_pz + log_py - log_qz - log_qy, log_qy

    def batch_terms(
        self, x: Tensor, n_targets: int, generator: torch.Generator | None = None,
        neighbor_terms: bool = False,
    ) -> GraphTerms:
        """VIMCO surrogate of each row (``own``), and the EnumY terms for the regulariser."""
        post = self.conditional(x)
        n, K, M = x.shape[0], self.n_clusters, self.prior.latent_dim
        S, T = self.n_samples, int(n_targets)
        # the VIMCO bound only for the targets (the other rows serve as neighbours)
        anchors = ConditionalPosterior(post.log_qy[:T], post.mean[:T], post.std[:T])
        y = torch.multinomial(anchors.log_qy.detach().exp(), S, replacement=True,
                              generator=generator)
        eps = torch.randn((T, S, M), generator=generator, device=x.device, dtype=x.dtype)
        log_w, log_qy = self.log_weights(x[:T], anchors, y, eps)
        bound = vimco_terms(log_w, log_qy).surrogate
        own = torch.cat([bound, bound.new_zeros(n - T)])
        gamma = post.log_qy.exp()
        entropy = -(gamma * post.log_qy).sum(-1)
        kl = gaussian_kl(post.mean, post.std, self.prior.means, self.prior.log_vars)  # (n, K)
        latent = -(gamma * kl).sum(-1) + entropy
        recon = None
        if neighbor_terms:  # one z per cluster, decoded: the EnumY neighbour ELBO
            eps_y = torch.randn((n, K, M), generator=generator, device=x.device, dtype=x.dtype)
            z = post.mean + post.std * eps_y
            recon = self.decoder(z.reshape(n * K, M)).view(n, K, -1)
        return GraphTerms(own=own, gamma=gamma, latent_term=latent, recon=recon,
                          recon_weight=gamma if neighbor_terms else None)

    # ------------------------------------------------------------------ prediction
    def log_gamma(self, x: Tensor) -> Tensor:
        """``ln q(y | x)``, shape (n, n_clusters)."""
        mu = self.encoder.embed(x)
        return self.head.log_gamma(mu, mu, self.prior)

    def embed(self, x: Tensor) -> Tensor:
        """Posterior mean ``E_q[z | x] = sum_y q(y | x) m_y(x)``, shape (n, latent_dim)."""
        post = self.conditional(x)
        return (post.log_qy.exp().unsqueeze(-1) * post.mean).sum(1)

    def autoencode(self, x: Tensor) -> Tensor:
        """Decoder output of the encoder's mean (the autoencoder of pretraining)."""
        return self.decoder(self.encoder.embed(x))

    # ------------------------------------------------------------------ start
    @torch.no_grad()
    def start_from(self, init: InitResult, std_ratio: float = 0.1) -> None:
        """Prior from ``init``; every ``m_y`` = the pretrained mean head; ``s_y`` a small constant.

        ``softplus(.) + eps_z`` starts at ``sqrt(std_ratio * mean prior variance) + eps_z``.
        """
        self.prior.set_parameters(init.means, init.variances, init.weights)
        K = self.n_clusters
        self.cond_mean.weight.copy_(self.encoder.mu.weight.repeat(K, 1))
        self.cond_mean.bias.copy_(self.encoder.mu.bias.repeat(K))
        s0 = math.sqrt(std_ratio * float(np.mean(init.variances)))
        self.cond_std.weight.zero_()
        self.cond_std.bias.fill_(math.log(math.expm1(max(s0, 1e-4))))  # softplus^-1(s0)


def build_nvisa(
    in_dim: int,
    n_clusters: int,
    likelihood: Likelihood,
    latent_dim: int = 10,
    hidden: Sequence[int] = (500, 500, 2000),
    n_samples: int = 15,
    annealing: StdAnnealing = StdAnnealing(),
    generator: torch.Generator | None = None,
) -> NVISA:
    """Encoder ``in_dim-hidden-latent``, mirrored decoder, GMM prior, head, conditional heads."""
    hidden = check_hidden(hidden)
    if int(latent_dim) < 1:
        raise GraphclustError(f"latent_dim must be >= 1, got {latent_dim}")
    out_dim = int(in_dim) * int(getattr(likelihood, "params_per_feature", 1))
    encoder = GaussianEncoder(in_dim, hidden, latent_dim, generator)
    decoder = Decoder(latent_dim, hidden[::-1], out_dim, generator)
    head = ClassifierHead(latent_dim, n_clusters, generator)
    prior = GaussianMixturePrior(n_clusters, latent_dim)
    return NVISA(encoder, decoder, prior, head, likelihood, n_samples, annealing, generator)


class NVISARecipe:
    """How the staged pipeline builds and starts the slides' GMVAE.

    Parameters
    ----------
    latent_dim : int
    hidden : sequence of int
    n_samples : int
        VIMCO samples.
    annealing : StdAnnealing
    std_ratio : float
        Initial ``s_y^2`` as a fraction of the mean prior variance.
    head_C : float
        Inverse L2 strength of the head fitted to the initial clusters.
    """

    name = "gmvae"

    def __init__(self, latent_dim: int = 10, hidden: Sequence[int] = (500, 500, 2000),
                 n_samples: int = 15, annealing: StdAnnealing = StdAnnealing(),
                 std_ratio: float = 0.1, head_C: float = 1.0) -> None:
        self.latent_dim, self.hidden = int(latent_dim), check_hidden(hidden)
        self.n_samples, self.annealing = int(n_samples), annealing
        self.std_ratio, self.head_C = float(std_ratio), float(head_C)

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "latent_dim": self.latent_dim, "hidden": list(self.hidden),
                "n_samples": self.n_samples, "annealing": repr(self.annealing),
                "std_ratio": self.std_ratio, "head_C": self.head_C}

    def build(self, in_dim: int, n_clusters: int, likelihood: Likelihood,
              generator: torch.Generator | None) -> NVISA:
        return build_nvisa(in_dim, n_clusters, likelihood, self.latent_dim, self.hidden,
                           self.n_samples, self.annealing, generator)

    def autoencoder(self, model: NVISA, in_dim: int, n_clusters: int, likelihood: Likelihood,
                    generator: torch.Generator | None) -> nn.Module:
        """The model itself: its trunk, mean head and decoder are pretrained as an AE."""
        return model

    def start(self, model: NVISA, ae: nn.Module, X: Tensor, latent: np.ndarray,
              init: InitResult, batch_size: int, lr: float, generator: torch.Generator | None,
              verbose: bool = False) -> None:
        model.start_from(init, self.std_ratio)
        pretrain_head(model.head, torch.from_numpy(latent).to(X.device), init.labels,
                      C=self.head_C)

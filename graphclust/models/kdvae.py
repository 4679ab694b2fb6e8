"""k-DVAE and k-DAE (seed 003): ``k`` encoder/decoder pairs, one per cluster, hard-max clustering.

Generative model of k-DVAE: ``y ~ Cat(alpha)``, ``z ~ N(0, I)``, ``x | z, y = i ~ p_theta_i(x | z)``;
pair ``i`` has its own encoder ``q_i(z | x) = N(mu_i(x), diag sigma_i^2(x))`` and decoder.
The seed's objective (eq. 6) replaces ``q(y | x)`` by a hard maximum over the pairs:

    ELBO_i(x) = ln p_theta_i(x | z_i) - KL(q_i(z | x) || N(0, I)),   z_i ~ q_i(z | x),
    own(x)    = max_i ( ELBO_i(x) + ln alpha_i ),   alpha uniform,

(``ln alpha_i = -ln k`` is a constant; keeping it makes ``own`` exactly the single-component
ELBO ``R + A + <gamma, ln alpha>`` with ``gamma`` the one-hot of the winning pair, which is
what the graph regulariser's self-consistency needs). Clusters come from eq. 8, with the
latent means instead of samples:

    y(x) = argmax_i  ln p_theta_i(x | mu_i(x)) - ||mu_i(x)||^2 / 2 + sum_s ln sigma_is(x);

``predict_proba`` is the softmax of these scores. k-DAE (Opochinsky et al., 2020) is the
same architecture without the variational part: ``own(x) = max_i ln p(x | AE_i(x)) - ln k``
and ``y(x) = argmax_i ln p(x | AE_i(x))``.

The ``k`` pairs are :mod:`graphclust.nn.stacked` networks: one batched matmul per layer for
all pairs. Initialisation (seed: pretrain a single network, cluster its latent space, then
train): the shared denoising-AE + latent-GMM stages give initial clusters, and
:func:`pretrain_pairs` trains pair ``i`` as an autoencoder on the rows of cluster ``i``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from graphclust.models.mixture import build_gmvae
from graphclust.models.pretrain import InitResult, adam_epochs, check_cluster_labels
from graphclust.nn.graph_reg import GraphTerms
from graphclust.nn.likelihood import Likelihood
from graphclust.nn.mlp import check_hidden
from graphclust.nn.stacked import StackedDecoder, StackedGaussianEncoder
from graphclust.utils import GraphclustError

__all__ = [
    "KAutoencoderRecipe",
    "KAutoencoders",
    "PairTerms",
    "build_k_autoencoders",
    "gaussian_kl_standard",
    "pretrain_pairs",
]


def gaussian_kl_standard(mu: Tensor, logvar: Tensor) -> Tensor:
    """``KL(N(mu, diag exp(logvar)) || N(0, I))`` summed over the last dimension."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(-1)


class PairTerms(NamedTuple):
    """Every pair's terms for a batch of ``n`` rows.

    Attributes
    ----------
    recon : Tensor of shape (k, n, n_outputs)
        Decoder outputs (of a sample ``z_i``, or of ``mu_i`` when not sampling).
    log_lik : Tensor of shape (n, k)
        ``ln p_theta_i(x | z_i)``.
    kl : Tensor of shape (n, k)
        ``KL(q_i(z | x) || N(0, I))`` (zeros for k-DAE).
    score : Tensor of shape (n, k)
        ``ELBO_i + ln alpha_i`` (k-DAE: ``ln p(x | AE_i(x)) + ln alpha_i``).
    """

    recon: Tensor
    log_lik: Tensor
    kl: Tensor
    score: Tensor


class KAutoencoders(nn.Module):
    """``k`` (variational) autoencoders, one per cluster: k-DVAE or k-DAE.

    Parameters
    ----------
    encoder : StackedGaussianEncoder
    decoder : StackedDecoder
    likelihood : Likelihood
    variational : bool
        k-DVAE (sample ``z``, KL to ``N(0, I)``) or k-DAE (``z = mu``, reconstruction only).
    """

    def __init__(
        self, encoder: StackedGaussianEncoder, decoder: StackedDecoder, likelihood: Likelihood,
        variational: bool = True,
    ) -> None:
        super().__init__()
        self.encoder, self.decoder, self.likelihood = encoder, decoder, likelihood
        self.variational = bool(variational)

    @property
    def n_clusters(self) -> int:
        return self.encoder.n_stack

    def log_prior(self) -> Tensor:
        """Uniform ``ln alpha = -ln k``, shape (k,)."""
        K = self.n_clusters
        return torch.full((K,), -math.log(K), device=self.encoder.mu.weight.device)

    def pair_terms(self, x: Tensor, sample: bool = True,
                   generator: torch.Generator | None = None) -> PairTerms:
        """Run all ``k`` pairs on ``x`` (n, n_features) at once."""
        K = self.n_clusters
        mu, logvar = self.encoder(x)  # (k, n, M)
        if self.variational and sample:
            eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
            z = mu + (0.5 * logvar).exp() * eps
        else:
            z = mu
        recon = self.decoder(z)  # (k, n, D_out)
        log_lik = self.likelihood.log_prob(x.unsqueeze(0).expand(K, -1, -1), recon).T  # (n, k)
        if self.variational:
            kl = gaussian_kl_standard(mu, logvar).T
        else:
            kl = torch.zeros_like(log_lik)
        return PairTerms(recon, log_lik, kl, log_lik - kl + self.log_prior())

    def batch_terms(
        self, x: Tensor, n_targets: int, generator: torch.Generator | None = None,
        neighbor_terms: bool = False,
    ) -> GraphTerms:
        """Hard-max objective of each row and the winning pair's terms (see :class:`GraphTerms`).

        ``own = max_i score_i``; ``gamma`` is the one-hot of the winning pair, ``recon`` its
        decoder output (shape (n, 1, n_outputs)), ``latent_term = -KL`` of that pair.
        """
        t = self.pair_terms(x, sample=True, generator=generator)
        own, best = t.score.max(dim=1)
        gamma = F.one_hot(best, self.n_clusters).to(t.score.dtype)
        rows = torch.arange(x.shape[0], device=x.device)
        latent = -t.kl[rows, best]
        recon = t.recon[best, rows].unsqueeze(1) if neighbor_terms else None
        return GraphTerms(own=own, gamma=gamma, latent_term=latent, recon=recon)

    def cluster_scores(self, x: Tensor) -> Tensor:
        """Eq. 8 of the seed (k-DAE: the reconstruction log-likelihood), shape (n, k)."""
        mu, logvar = self.encoder(x)
        log_lik = self.likelihood.log_prob(
            x.unsqueeze(0).expand(self.n_clusters, -1, -1), self.decoder(mu)).T
        if not self.variational:
            return log_lik
        return log_lik + (-0.5 * mu.pow(2).sum(-1) + 0.5 * logvar.sum(-1)).T

    def log_gamma(self, x: Tensor) -> Tensor:
        """``ln softmax`` of :meth:`cluster_scores`: the soft version of the hard clustering."""
        return torch.log_softmax(self.cluster_scores(x), dim=-1)

    def embed(self, x: Tensor) -> Tensor:
        """Every pair's latent mean side by side, shape (n, k * latent_dim)."""
        mu = self.encoder.embed(x)  # (k, n, M)
        return mu.transpose(0, 1).reshape(x.shape[0], -1)

    def start_epoch(self, epoch: int, n_epochs: int) -> None:
        """No schedule."""


def build_k_autoencoders(
    in_dim: int,
    n_clusters: int,
    likelihood: Likelihood,
    latent_dim: int = 10,
    hidden: Sequence[int] = (500, 100),
    variational: bool = True,
    generator: torch.Generator | None = None,
) -> KAutoencoders:
    """``k`` pairs with encoders ``in_dim-hidden-latent_dim`` and mirrored decoders.

    Parameters
    ----------
    in_dim, n_clusters : int
    likelihood : Likelihood
        Decoders emit ``params_per_feature`` (default 1) values per input feature.
    latent_dim : int
    hidden : sequence of int
        Encoder widths of each pair (seed: ``(500, 100)``).
    variational : bool
    generator : torch.Generator, optional
    """
    hidden = check_hidden(hidden)
    if int(latent_dim) < 1:
        raise GraphclustError(f"latent_dim must be >= 1, got {latent_dim}")
    out_dim = int(in_dim) * int(getattr(likelihood, "params_per_feature", 1))
    enc = StackedGaussianEncoder(n_clusters, in_dim, hidden, latent_dim, generator)
    dec = StackedDecoder(n_clusters, latent_dim, hidden[::-1], out_dim, generator)
    return KAutoencoders(enc, dec, likelihood, variational)


def pretrain_pairs(
    model: KAutoencoders,
    X: Tensor,
    labels: np.ndarray,
    epochs: int,
    batch_size: int = 256,
    lr: float = 1e-3,
    generator: torch.Generator | None = None,
    verbose: bool = False,
) -> list[float]:
    """Train pair ``i`` on the rows with ``labels == i``, with the model's own per-pair objective.

    k-DVAE: the pair's ELBO (a VAE with an ``N(0, I)`` prior); k-DAE: its reconstruction
    log-likelihood. All pairs run on every batch (one batched pass) and each row's loss is
    read from its own cluster's pair, so the pairs are trained together.

    Parameters
    ----------
    model : KAutoencoders
    X : Tensor of shape (n_samples, n_features)
    labels : ndarray of shape (n_samples,)
        Initial clusters in ``[0, k)``.
    epochs, batch_size, lr :
        Adam.
    generator : torch.Generator, optional
        CPU generator of the shuffle and of the VAE samples (which, for data on another
        device, come from a generator seeded from it).

    Returns
    -------
    list of float
        Mean negative objective per epoch.
    """
    lab = check_cluster_labels(labels, X.shape[0], model.n_clusters)
    noise = generator
    if X.device.type != "cpu":  # the samples' generator lives on the data's device
        noise = torch.Generator(device=X.device)
        seed = torch.randint(2**62, (1,), generator=generator).item()
        noise.manual_seed(int(seed))

    def batch_loss(idx: Tensor) -> Tensor:
        x = X[idx.to(X.device)]
        li = lab[idx].to(X.device)
        score = model.pair_terms(x, sample=True, generator=noise).score  # (b, k)
        return -score.gather(1, li.unsqueeze(1)).mean()

    model.train()
    return adam_epochs(list(model.parameters()), batch_loss, X.shape[0], epochs, batch_size, lr,
                       generator, "pretrain pairs", verbose)


class KAutoencoderRecipe:
    """How the staged pipeline builds and starts k-DVAE / k-DAE.

    Parameters
    ----------
    variational : bool
        k-DVAE (True) or k-DAE (False).
    latent_dim : int
    hidden : sequence of int
        Widths of each pair's encoder (seed: ``(500, 100)``).
    init_hidden : sequence of int
        Widths of the single autoencoder whose latent clustering gives the initial clusters
        (DGG/VaDE architecture by default).
    pair_epochs : int
        Epochs of :func:`pretrain_pairs` on the initial clusters.
    """

    def __init__(
        self, variational: bool = True, latent_dim: int = 10, hidden: Sequence[int] = (500, 100),
        init_hidden: Sequence[int] = (500, 500, 2000), pair_epochs: int = 10,
    ) -> None:
        self.variational = bool(variational)
        self.latent_dim, self.hidden = int(latent_dim), check_hidden(hidden)
        self.init_hidden = check_hidden(init_hidden, "init_hidden")
        self.pair_epochs = int(pair_epochs)
        self.name = "kdvae" if self.variational else "kdae"

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "latent_dim": self.latent_dim, "hidden": list(self.hidden),
                "init_hidden": list(self.init_hidden), "pair_epochs": self.pair_epochs}

    def build(self, in_dim: int, n_clusters: int, likelihood: Likelihood,
              generator: torch.Generator | None) -> KAutoencoders:
        return build_k_autoencoders(in_dim, n_clusters, likelihood, self.latent_dim, self.hidden,
                                    self.variational, generator)

    def autoencoder(self, model: KAutoencoders, in_dim: int, n_clusters: int,
                    likelihood: Likelihood, generator: torch.Generator | None) -> nn.Module:
        """The single network pretrained to find the initial clusters (not part of the model)."""
        return build_gmvae(in_dim, n_clusters, likelihood, self.latent_dim, self.init_hidden,
                           posterior="gmm", generator=generator)

    def start(self, model: KAutoencoders, ae: nn.Module, X: Tensor, latent: np.ndarray,
              init: InitResult, batch_size: int, lr: float, generator: torch.Generator | None,
              verbose: bool = False) -> None:
        """Pretrain pair ``i`` on initial cluster ``i``."""
        pretrain_pairs(model, X, init.labels, self.pair_epochs, batch_size, lr, generator, verbose)

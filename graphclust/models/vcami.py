"""VCAMI (seed 004): variational deep embedding clustering by augmented mutual information.

Objective, to *maximise* (the seed's ``L_VCAMI = L_AMI + beta L_GMM + gamma L_REG`` with
``L_AMI = L_GMI + lambda L_LMI + alpha L_CMI``, the MI terms maximised and the two
distribution constraints minimised):

    GMI  = E ln sigma(T_g(x, z)) + E_{x, z' from another row} ln(1 - sigma(T_g(x, z')))
    LMI  = the same with T_l on (local features of x, z)
    CMI  = I(p(y | z), p(y | z_aug))                     (exact discrete MI over the batch)
    GMM  = E_z sum_y p(y | z) ln( p(z | x) / q(z | y) )  (q(z | y): the GMM prior)
    REG  = E KL(p(y | z) || q(y)),  q(y) uniform

    objective = GMI + lmi_weight LMI + cmi_weight CMI - gmm_weight GMM - reg_weight REG,

with ``z ~ p(z | x)`` (Gaussian encoder, reparameterised), ``p(y | z)`` a linear + softmax
head on ``z`` and ``x_aug`` an augmentation of ``x`` (:mod:`graphclust.data.augment`).
Every term is written per row (the discrete MI through
:func:`~graphclust.nn.mutual_info.mutual_information_per_node`), so the row mean is the
batch objective and the graph regulariser can combine rows.

Choices the seed leaves open (decided here): ``T(a, b)`` is an MLP on ``[a, b]``; "local"
features are the encoder's first hidden layer (an MLP has no feature map); the negative
pair of row ``i`` pairs ``x_i`` with ``z`` of the next row of the batch (batches are
shuffled); ``q(y)`` is uniform. The model has no decoder in its objective: the decoder is
used only to pretrain the encoder as an autoencoder (shared pretraining), so for the graph
regulariser the neighbour message is ``H(p(y | z_j)) + <p(y | z_j), ln pi_i>``, i.e.
``-KL(p(y | z_j) || pi_i)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from graphclust.data.augment import VectorAugment
from graphclust.models.mixture import ClassifierHead, GaussianMixturePrior
from graphclust.models.pretrain import InitResult, pretrain_head
from graphclust.nn.graph_reg import GraphTerms
from graphclust.nn.likelihood import Likelihood
from graphclust.nn.mlp import Decoder, GaussianEncoder, check_hidden
from graphclust.nn.mutual_info import (
    PairDiscriminator,
    jsd_mi_terms,
    mutual_information_per_node,
)
from graphclust.utils import GraphclustError

__all__ = ["VCAMI", "LatentSample", "VCAMIRecipe", "VCAMITerms", "VCAMIWeights", "build_vcami"]

_LOG_2PI = math.log(2.0 * math.pi)

Augmenter = Callable[[Tensor, "torch.Generator | None"], Tensor]


@dataclass(frozen=True)
class VCAMIWeights:
    """Weights of the VCAMI terms (the seed's ``lambda``, ``alpha``, ``beta``, ``gamma``).

    Attributes
    ----------
    lmi : float
        ``lambda``: local MI.
    cmi : float
        ``alpha``: MI between the cluster assignments of ``x`` and its augmentation.
    gmm : float
        ``beta``: Gaussian-mixture constraint.
    reg : float
        ``gamma``: ``KL(p(y | z) || uniform)``.
    """

    lmi: float = 0.5
    cmi: float = 1.0
    gmm: float = 0.01
    reg: float = 0.1

    def validate(self) -> None:
        bad = {k: v for k, v in asdict(self).items() if not float(v) >= 0}
        if bad:
            raise GraphclustError(f"VCAMI weights must be >= 0, got {bad}")


class VCAMITerms(NamedTuple):
    """The per-row VCAMI terms of a batch (each of shape (n,)).

    Attributes
    ----------
    gmi, lmi, cmi, gmm, reg : Tensor of shape (n,)
    """

    gmi: Tensor
    lmi: Tensor
    cmi: Tensor
    gmm: Tensor
    reg: Tensor


class LatentSample(NamedTuple):
    """``p(z | x) = N(mu, diag exp(logvar))`` and a sample ``z``, each of shape (n, latent_dim)."""

    mu: Tensor
    logvar: Tensor
    z: Tensor


def _diag_gaussian_log_prob(z: Tensor, mean: Tensor, logvar: Tensor) -> Tensor:
    """``ln N(z; mean, diag exp(logvar))`` over the last dimension (broadcasting)."""
    return -0.5 * (_LOG_2PI + logvar + (z - mean).pow(2) / logvar.exp()).sum(-1)


class VCAMI(nn.Module):
    """Encoder ``p(z | x)``, head ``p(y | z)``, GMM prior ``q(z | y)``, two discriminators.

    Parameters
    ----------
    encoder : GaussianEncoder
    decoder : Decoder
        Used only by autoencoder pretraining.
    head : ClassifierHead
        ``p(y | z)`` (linear + softmax on ``z``).
    prior : GaussianMixturePrior
        ``q(z | y)`` (its mixing weights are not used: ``q(y)`` is uniform).
    global_disc, local_disc : PairDiscriminator
        ``T_g(x, z)`` and ``T_l(h1(x), z)``.
    likelihood : Likelihood
        Of autoencoder pretraining.
    augment : callable
        ``(x, generator) -> x_aug``.
    weights : VCAMIWeights
    """

    def __init__(
        self,
        encoder: GaussianEncoder,
        decoder: Decoder,
        head: ClassifierHead,
        prior: GaussianMixturePrior,
        global_disc: PairDiscriminator,
        local_disc: PairDiscriminator,
        likelihood: Likelihood,
        augment: Augmenter,
        weights: VCAMIWeights = VCAMIWeights(),
    ) -> None:
        super().__init__()
        weights.validate()
        self.encoder, self.decoder, self.head, self.prior = encoder, decoder, head, prior
        self.global_disc, self.local_disc = global_disc, local_disc
        self.likelihood, self.augment, self.weights = likelihood, augment, weights

    @property
    def n_clusters(self) -> int:
        return self.prior.n_clusters

    def log_prior(self) -> Tensor:
        """Uniform ``ln q(y) = -ln K``."""
        K = self.n_clusters
        return torch.full((K,), -math.log(K), device=self.prior.means.device)

    def start_epoch(self, epoch: int, n_epochs: int) -> None:
        """No schedule."""

    def local_features(self, x: Tensor) -> Tensor:
        """The encoder's first hidden layer (ReLU), or ``x`` for a linear encoder."""
        if not self.encoder.hidden:
            return x
        return torch.relu(self.encoder.trunk[0][0](x))

    def sample(self, x: Tensor, generator: torch.Generator | None) -> LatentSample:
        """``p(z | x)`` of each row and one reparameterised sample."""
        mu, logvar = self.encoder(x)
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        return LatentSample(mu, logvar, mu + (0.5 * logvar).exp() * eps)

    def terms(
        self, x: Tensor, z: Tensor, mu: Tensor, logvar: Tensor, log_gamma: Tensor,
        log_gamma_aug: Tensor,
    ) -> VCAMITerms:
        """The per-row terms from given samples (the graph-free objective is their combination).

        Parameters
        ----------
        x : Tensor of shape (n, n_features)
        z : Tensor of shape (n, latent_dim)
            Sample of ``p(z | x)``; ``mu``, ``logvar`` its parameters.
        log_gamma, log_gamma_aug : Tensor of shape (n, n_clusters)
            ``ln p(y | z)`` of ``x`` and of its augmentation.
        """
        z_neg = z.roll(1, dims=0)  # another row's code: a sample of the product of marginals
        gmi = jsd_mi_terms(self.global_disc(x, z), self.global_disc(x, z_neg))
        h = self.local_features(x)
        lmi = jsd_mi_terms(self.local_disc(h, z), self.local_disc(h, z_neg))
        gamma, gamma_aug = log_gamma.exp(), log_gamma_aug.exp()
        cmi = mutual_information_per_node(gamma, gamma_aug)
        log_q = _diag_gaussian_log_prob(z, mu, logvar)  # ln p(z | x)
        log_prior = self.prior.component_log_prob(z)  # ln q(z | y), (n, K)
        gmm = (gamma * (log_q.unsqueeze(-1) - log_prior)).sum(-1)
        reg = (gamma * (log_gamma + math.log(self.n_clusters))).sum(-1)
        return VCAMITerms(gmi, lmi, cmi, gmm, reg)

    def combine(self, t: VCAMITerms) -> Tensor:
        """``GMI + lmi LMI + cmi CMI - gmm GMM - reg REG`` per row."""
        w = self.weights
        return t.gmi + w.lmi * t.lmi + w.cmi * t.cmi - w.gmm * t.gmm - w.reg * t.reg

    def batch_terms(
        self, x: Tensor, n_targets: int, generator: torch.Generator | None = None,
        neighbor_terms: bool = False,
    ) -> GraphTerms:
        """VCAMI objective of the targets; ``gamma``, ``A = H(gamma)`` of every row.

        A batch of one target (the last one of an epoch, at worst) has no other row to draw
        a negative pair from; its row is then its own negative, which gives no MI signal.
        """
        T, n = int(n_targets), x.shape[0]
        if T < 1:
            raise GraphclustError("VCAMI needs at least one target row per batch")
        mu, logvar, z = self.sample(x, generator)
        log_gamma = torch.log_softmax(self.head.linear(z), dim=-1)
        xa = x[:T]
        _, _, z_aug = self.sample(self.augment(xa, generator), generator)
        log_gamma_aug = torch.log_softmax(self.head.linear(z_aug), dim=-1)
        t = self.terms(xa, z[:T], mu[:T], logvar[:T], log_gamma[:T], log_gamma_aug)
        own = self.combine(t)
        own = torch.cat([own, own.new_zeros(n - T)])
        gamma = log_gamma.exp()
        entropy = -(gamma * log_gamma).sum(-1)
        return GraphTerms(own=own, gamma=gamma, latent_term=entropy)

    def log_gamma(self, x: Tensor) -> Tensor:
        """``ln p(y | z = mu(x))``, shape (n, n_clusters)."""
        return torch.log_softmax(self.head.linear(self.encoder.embed(x)), dim=-1)

    def embed(self, x: Tensor) -> Tensor:
        """Latent means, shape (n, latent_dim)."""
        return self.encoder.embed(x)

    def autoencode(self, x: Tensor) -> Tensor:
        """Decoder output of the latent mean (autoencoder pretraining only)."""
        return self.decoder(self.encoder.embed(x))


def build_vcami(
    in_dim: int,
    n_clusters: int,
    likelihood: Likelihood,
    augment: Augmenter | None = None,
    latent_dim: int = 10,
    hidden: Sequence[int] = (500, 500, 2000),
    disc_hidden: Sequence[int] = (256,),
    weights: VCAMIWeights = VCAMIWeights(),
    generator: torch.Generator | None = None,
) -> VCAMI:
    """VCAMI with encoder ``in_dim-hidden-latent``, mirrored decoder and MLP discriminators."""
    hidden = check_hidden(hidden)
    disc_hidden = check_hidden(disc_hidden, "disc_hidden")
    if int(latent_dim) < 1:
        raise GraphclustError(f"latent_dim must be >= 1, got {latent_dim}")
    out_dim = int(in_dim) * int(getattr(likelihood, "params_per_feature", 1))
    encoder = GaussianEncoder(in_dim, hidden, latent_dim, generator)
    decoder = Decoder(latent_dim, hidden[::-1], out_dim, generator)
    head = ClassifierHead(latent_dim, n_clusters, generator)
    prior = GaussianMixturePrior(n_clusters, latent_dim)
    local_dim = hidden[0] if hidden else in_dim
    t_g = PairDiscriminator(in_dim, latent_dim, disc_hidden, generator)
    t_l = PairDiscriminator(local_dim, latent_dim, disc_hidden, generator)
    return VCAMI(encoder, decoder, head, prior, t_g, t_l, likelihood,
                 augment if augment is not None else VectorAugment(), weights)


class VCAMIRecipe:
    """How the staged pipeline builds and starts VCAMI.

    Parameters
    ----------
    augment : callable
        ``(x, generator) -> x_aug``.
    latent_dim, hidden, disc_hidden, weights :
        See :func:`build_vcami`.
    logvar_ratio : float
        Initial ``sigma^2`` of the encoder as a fraction of the mean prior variance.
    head_C : float
        Inverse L2 strength of the head fitted to the initial clusters.
    """

    name = "vcami"

    def __init__(self, augment: Augmenter, latent_dim: int = 10,
                 hidden: Sequence[int] = (500, 500, 2000), disc_hidden: Sequence[int] = (256,),
                 weights: VCAMIWeights = VCAMIWeights(), logvar_ratio: float = 0.1,
                 head_C: float = 1.0) -> None:
        self.augment, self.latent_dim = augment, int(latent_dim)
        self.hidden = check_hidden(hidden)
        self.disc_hidden = check_hidden(disc_hidden, "disc_hidden")
        self.weights, self.logvar_ratio, self.head_C = weights, float(logvar_ratio), float(head_C)

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "augment": repr(self.augment), "latent_dim": self.latent_dim,
                "hidden": list(self.hidden), "disc_hidden": list(self.disc_hidden),
                "weights": asdict(self.weights), "logvar_ratio": self.logvar_ratio,
                "head_C": self.head_C}

    def build(self, in_dim: int, n_clusters: int, likelihood: Likelihood,
              generator: torch.Generator | None) -> VCAMI:
        return build_vcami(in_dim, n_clusters, likelihood, self.augment, self.latent_dim,
                           self.hidden, self.disc_hidden, self.weights, generator)

    def autoencoder(self, model: VCAMI, in_dim: int, n_clusters: int, likelihood: Likelihood,
                    generator: torch.Generator | None) -> nn.Module:
        """The model itself: encoder trunk, mean head and decoder are pretrained as an AE."""
        return model

    def start(self, model: VCAMI, ae: nn.Module, X: Tensor, latent: np.ndarray,
              init: InitResult, batch_size: int, lr: float, generator: torch.Generator | None,
              verbose: bool = False) -> None:
        """Prior from the latent clustering, head fitted to it, small encoder variances."""
        model.prior.set_parameters(init.means, init.variances, init.weights)
        model.encoder.reset_logvar(math.log(self.logvar_ratio * float(np.mean(init.variances))))
        pretrain_head(model.head, torch.from_numpy(latent).to(X.device), init.labels,
                      C=self.head_C)

"""Torch modules: encoder/decoder MLPs, decoder likelihoods, and the DGG objective as message passing."""

from graphclust.nn.dgg import (
    DGGObjective,
    MixingPropagation,
    mixing_matrix,
    normalize_edges,
)
from graphclust.nn.likelihood import (
    BernoulliLikelihood,
    GaussianLikelihood,
    Likelihood,
    get_likelihood,
)
from graphclust.nn.mlp import Decoder, GaussianEncoder, GaussianPosterior

__all__ = [
    "DGGObjective",
    "MixingPropagation",
    "mixing_matrix",
    "normalize_edges",
    "Likelihood",
    "BernoulliLikelihood",
    "GaussianLikelihood",
    "get_likelihood",
    "GaussianEncoder",
    "GaussianPosterior",
    "Decoder",
]

"""Torch modules: encoder/decoder MLPs (single and stacked), decoder likelihoods, the DGG objective
and the plug-in neighbour ELBO as message passing, the VIMCO bound, mutual-information terms."""

from graphclust.nn.dgg import (
    DGGObjective,
    MixingPropagation,
    mixing_matrix,
    normalize_edges,
)
from graphclust.nn.graph_reg import GraphTerms, NeighborELBO
from graphclust.nn.likelihood import (
    BernoulliLikelihood,
    GaussianLikelihood,
    LearnedStdGaussianLikelihood,
    Likelihood,
    get_likelihood,
)
from graphclust.nn.mlp import Decoder, GaussianEncoder, GaussianPosterior
from graphclust.nn.stacked import (
    StackedDecoder,
    StackedGaussianEncoder,
    StackedLinear,
    StackedMLP,
)
from graphclust.nn.vimco import VimcoTerms, vimco_terms

__all__ = [
    "BernoulliLikelihood",
    "DGGObjective",
    "Decoder",
    "GaussianEncoder",
    "GaussianLikelihood",
    "GaussianPosterior",
    "GraphTerms",
    "LearnedStdGaussianLikelihood",
    "Likelihood",
    "MixingPropagation",
    "NeighborELBO",
    "StackedDecoder",
    "StackedGaussianEncoder",
    "StackedLinear",
    "StackedMLP",
    "VimcoTerms",
    "get_likelihood",
    "mixing_matrix",
    "normalize_edges",
    "vimco_terms",
]

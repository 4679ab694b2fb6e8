"""Contrastive (Siamese) embedding stage: networks, pair miners, losses and the estimator.

The usual entry point is :class:`SiameseEmbedder`; the pieces it is built from
are public so that a miner, a distance or a network can be swapped in.
"""

from .embedder import SiameseEmbedder
from .losses import ContrastiveLoss, euclidean_distance
from .networks import ACTIVATIONS, MLPEmbedding
from .pairs import KNNPairMiner, LabelPairMiner, PairBatch, PairMiner

__all__ = [
    "ACTIVATIONS",
    "ContrastiveLoss",
    "KNNPairMiner",
    "LabelPairMiner",
    "MLPEmbedding",
    "PairBatch",
    "PairMiner",
    "SiameseEmbedder",
    "euclidean_distance",
]

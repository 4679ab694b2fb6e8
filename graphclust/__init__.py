"""graphclust: graph-centric deep clustering.

The graph stage (Siamese embedding -> faiss kNN graph -> affinity kernel), graph-aware
datasets that yield node-plus-neighbour indices, and clustering models written as
PyTorch Geometric message passing.
"""

__version__ = "0.1.0"

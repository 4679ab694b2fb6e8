"""Mixture-model pieces, pretraining, batching and training loops (the procedures behind the estimators).

- :mod:`~graphclust.models.mixture`: GMM prior, cluster posteriors, the GMVAE module.
- :mod:`~graphclust.models.pretrain`: denoising AE, latent-clustering initialisers, head fit.
- :mod:`~graphclust.models.batching`: vectorised subgraph batches (full or sampled neighbours).
- :mod:`~graphclust.models.training`: the DGG / VaDE epoch loop with resumable checkpoints.
- :mod:`~graphclust.models.pipeline`: the staged, cached pipeline used by estimators and CLI.
"""

"""Mixture-model pieces, pretraining, batching and training loops (the procedures behind the estimators).

- :mod:`~graphclust.models.mixture`: GMM prior, cluster posteriors, the GMVAE module.
- :mod:`~graphclust.models.pretrain`: denoising AE, latent-clustering initialisers, head fit.
- :mod:`~graphclust.models.batching`: vectorised subgraph batches (full or sampled neighbours).
- :mod:`~graphclust.models.training`: the DGG / VaDE epoch loop with resumable checkpoints.
- :mod:`~graphclust.models.pipeline`: the staged, cached pipeline used by estimators and CLI.
- :mod:`~graphclust.models.regularizer`: DGG's neighbour term as a plug-in for any model.
- :mod:`~graphclust.models.loop`, :mod:`~graphclust.models.staged`: the training loop and the
  staged pipeline of the models below (any :class:`~graphclust.models.loop.ClusterModel`).
- :mod:`~graphclust.models.nvisa` (the slides' GMVAE), :mod:`~graphclust.models.kdvae`
  (k-DVAE, k-DAE), :mod:`~graphclust.models.vcami` (VCAMI).
"""

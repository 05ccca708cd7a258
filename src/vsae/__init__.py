"""vsae: helper package of the reproducible book *Analysis of Variational Sparse Autoencoders*.

Baker & Li, arXiv 2509.22994. One module per concept:

- :mod:`vsae.profiles`     named settings (``paper``, ``offline``, ``smoke``)
- :mod:`vsae.store`        content-addressed artifact store shared by every chapter
- :mod:`vsae.assets`       pinned offline assets fetched from package registries
- :mod:`vsae.lm`           language models through transformer-lens' ``TransformerBridge``
- :mod:`vsae.data`         corpora, splits and 128-token contexts
- :mod:`vsae.activations`  on-disk activation cache and training batches
- :mod:`vsae.models`       the TopK SAE and the variational TopK SAE
- :mod:`vsae.training`     the trainer (several SAEs from one pass)
- :mod:`vsae.evals`        core, sparse probing, SCR/TPP, absorption
- :mod:`vsae.interp`       per-feature interpretability
- :mod:`vsae.latent`       t-SNE views and decoder independence
- :mod:`vsae.plotting`     figures with one palette
"""

__version__ = "0.1.0"

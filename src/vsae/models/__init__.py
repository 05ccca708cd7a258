"""The two sparse autoencoders of the paper: the TopK SAE and the variational TopK SAE (vSAE).

Both follow the SAE interface shared by SAE Bench, SAELens and dictionary_learning: parameters
``W_enc [d_in, d_sae]``, ``b_enc [d_sae]``, ``W_dec [d_sae, d_in]``, ``b_dec [d_in]`` (the vSAE with
learned variance adds ``W_var [d_in, d_sae]`` and ``b_var [d_sae]``), a dataclass ``cfg`` saved as
``cfg.json`` beside ``sae.safetensors``, and the methods ``encode`` / ``encode_topk`` / ``pre_acts`` /
``decode`` / ``forward`` (which returns :class:`SAEOutput`).

Layout, one concept per module:

- :mod:`.config`  ``TopKSAEConfig``, ``VSAEConfig`` (documented defaults = the paper's recipe), ``SAEOutput``
- :mod:`.kernels` the sparse CPU kernels and autograd functions of a training step
- :mod:`.base`    ``SAEBase``: the interface, dense encoder matmul, sparse decode, AuxK, ``save``
- :mod:`.topk`    ``TopKSAE`` (dictionary_learning ``trainers/top_k.py``), ``geometric_median``
- :mod:`.vsae`    ``VSAE`` (the authors' ``VSAETopK``), ``decoder_normalization_effect``
- :mod:`.io`      the architecture registry: ``build_sae``, ``load_sae``, ``config_from_dict``

Speed (CPU): the encoder is one dense matmul; TopK uses a block-max prefilter (``topk_select``); the
decoder and all backward passes that only touch the k selected latents are sparse, so a TopK
training step costs one dense ``d_in x d_sae`` matmul per token plus O(k * d_in) work. A dense
penalty (KL over all latents, the L2 control) adds the one unavoidable dense backward matmul. With
``compute_dtype = torch.bfloat16`` the dense matmuls, the TopK selection and the selected values are
bf16; weights, optimizer, decoder, sparse gradients and losses stay fp32.

Dead latents: a latent *fires* when it is selected with a positive activation (ReLU value for the
TopK SAE, mu for the vSAE, so sampling noise alone does not keep a latent alive); AuxK uses the
latents that have not fired for ``dead_tokens_threshold`` training tokens.

Units: SAEs are trained on activations divided by the cache's ``norm_factor`` (unit mean squared
norm). :meth:`SAEBase.fold_activation_scale` folds that factor into the weights (biases times the
factor, as dictionary_learning's ``scale_biases``), so a saved SAE runs on raw activations: its codes
and reconstructions are the trained model's times the factor, and ``cfg.act_scale`` records the
factor so that the training-only terms (KL, L2 penalty, variance clamps) are still computed in the
units they were trained in.
"""

from .base import SAEBase
from .config import SAEOutput, TopKSAEConfig, VSAEConfig
from .io import REGISTRY, build_sae, config_from_dict, load_sae
from .kernels import SWITCHES, SparsePattern, gather_dot, gather_sum, release_scratch, scatter_rows, topk_select
from .topk import TopKSAE, geometric_median
from .vsae import VSAE, decoder_normalization_effect

__all__ = [
    "TopKSAEConfig",
    "VSAEConfig",
    "SAEOutput",
    "SAEBase",
    "TopKSAE",
    "VSAE",
    "REGISTRY",
    "build_sae",
    "load_sae",
    "config_from_dict",
    "geometric_median",
    "topk_select",
    "gather_sum",
    "gather_dot",
    "scatter_rows",
    "SparsePattern",
    "SWITCHES",
    "release_scratch",
    "decoder_normalization_effect",
]

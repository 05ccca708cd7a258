"""Configs of the two SAEs (one dataclass per architecture, saved as ``cfg.json``) and the
named-tuple output of ``forward``.

The defaults are the paper's recipe (Baker & Li 2025, section 3 "Experimental setup"; the authors'
``VSAETopK`` trainer and dictionary_learning's ``TopKTrainer``, ``trainers/top_k.py``).
"""

from __future__ import annotations

import math

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

import torch


@dataclass
class TopKSAEConfig:
    """TopK SAE (the paper's baseline; dictionary_learning's ``TopKTrainer`` recipe)."""

    #: input width (the hooked model's d_model; 512 for Pythia-70M)
    d_in: int
    #: dictionary size (the paper: 16 * d_in = 8192)
    d_sae: int
    #: active latents per token
    k: int
    #: fixed; ``load_sae`` dispatches on it
    architecture: Literal["topk"] = "topk"
    #: seed of the weight initialisation
    seed: int = 42
    #: weight of the AuxK loss (the paper: 1/32)
    auxk_alpha: float = 1 / 32
    #: a latent is dead once it has not fired for this many training tokens (the paper: 10M, never
    #: reached in its 1.92M-token runs, so its AuxK never fired)
    dead_tokens_threshold: int = 10_000_000
    #: dead latents that reconstruct the residual in AuxK; None -> d_in // 2
    k_aux: int | None = None
    #: the L2 control of the book's "beyond" chapter: weight of the penalty 0.5 * sum_i a_i^2 on all post-ReLU pre-activations
    #: (the vSAE's fixed-variance KL without clamp), warmed up like the KL. 0 = the paper's TopK.
    l2_preact_coeff: float = 0.0
    #: -- recipe choices in which the paper's two SAEs differ (the attribution ladder flips them one
    #: at a time; the defaults are each architecture's own recipe) --
    #: encode x - b_dec (dictionary_learning's TopK) instead of x (the vSAE's "april update")
    subtract_b_dec: bool = True
    #: keep decoder rows at unit norm in training (gradient projection + renormalisation)
    unit_norm_decoder: bool = True
    #: weight initialisation: "topk" (nn.Linear-uniform rows scaled to unit norm, W_enc = W_dec^T) or
    #: "vsae" (N(0, 1) rows scaled to norm 0.1, W_enc = W_dec^T)
    init: Literal["topk", "vsae"] = "topk"
    #: b_dec before the first step: "geometric_median" of the first batch, or "zero"
    b_dec_init: Literal["geometric_median", "zero"] = "geometric_median"
    #: the factor folded into the weights (1 while training on normalised activations; the cache's
    #: norm_factor in a saved SAE that runs on raw activations)
    act_scale: float = 1.0
    #: free-form provenance (language model, hook, cache checksum, norm factor, training config)
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.k_aux is None:
            self.k_aux = self.d_in // 2
        _check_common(self)
        if self.architecture != "topk":
            raise ValueError(f"TopKSAEConfig.architecture must be 'topk', got {self.architecture!r}")
        if self.l2_preact_coeff < 0:
            raise ValueError("l2_preact_coeff must be >= 0")


@dataclass
class VSAEConfig:
    """Variational TopK SAE (the authors' ``VSAETopK``, "vae_topk_v2")."""

    d_in: int
    d_sae: int
    k: int
    architecture: Literal["vsae"] = "vsae"
    seed: int = 42
    #: "fixed": z = mu (the evaluated runs); "unit": z = mu + noise_scale * eps (blog post: 1);
    #: "learned": z = mu + sigma * eps with log sigma^2 = x @ W_var + b_var (abstract)
    var_mode: Literal["fixed", "unit", "learned"] = "fixed"
    #: sigma of the "unit" mode's sampling noise, in the normalised units of the SAE's input (where
    #: the mean squared norm of an input vector is 1 after dividing by ``act_scale``); the blog post's
    #: unit variance is 1.0. The KL's sigma-only terms are constants and are left out (see vsae.py)
    noise_scale: float = 1.0
    #: KL weight (the paper: 1.0)
    kl_coeff: float = 1.0
    #: "all": KL over all d_sae latents (the paper); "topk": over the k selected (authors' later fix)
    kl_scope: Literal["all", "topk"] = "all"
    #: initial log-variance (b_var) of the learned-variance mode
    log_var_init: float = -2.0
    #: clamp of log sigma^2 (learned mode)
    log_var_clamp: tuple[float, float] = (-6.0, 2.0)
    #: clamp of mu inside the KL (|mu| <= kl_clamp)
    kl_clamp: float = 10.0
    #: AuxK (off in the paper); dead latents ranked by |z|
    auxk_alpha: float = 0.0
    dead_tokens_threshold: int = 10_000_000
    k_aux: int | None = None
    act_scale: float = 1.0
    #: True once :meth:`VSAE.normalized_decoder` rescaled decoder rows to unit norm (export only)
    decoder_normalized: bool = False
    #: -- recipe choices in which the paper's two SAEs differ (the attribution ladder flips them one
    #: at a time; the defaults are each architecture's own recipe) --
    #: encode x - b_dec (dictionary_learning's TopK) instead of x (the vSAE's "april update")
    subtract_b_dec: bool = False
    #: keep decoder rows at unit norm in training (gradient projection + renormalisation)
    unit_norm_decoder: bool = False
    #: weight initialisation: "topk" (nn.Linear-uniform rows scaled to unit norm, W_enc = W_dec^T) or
    #: "vsae" (N(0, 1) rows scaled to norm 0.1, W_enc = W_dec^T)
    init: Literal["topk", "vsae"] = "vsae"
    #: b_dec before the first step: "geometric_median" of the first batch, or "zero"
    b_dec_init: Literal["geometric_median", "zero"] = "zero"
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.k_aux is None:
            self.k_aux = self.d_in // 2
        self.log_var_clamp = tuple(float(v) for v in self.log_var_clamp)  # type: ignore[assignment]
        _check_common(self)
        if self.architecture != "vsae":
            raise ValueError(f"VSAEConfig.architecture must be 'vsae', got {self.architecture!r}")
        if self.var_mode not in ("fixed", "unit", "learned"):
            raise ValueError(f"var_mode must be fixed|unit|learned, got {self.var_mode!r}")
        if self.kl_scope not in ("all", "topk"):
            raise ValueError(f"kl_scope must be all|topk, got {self.kl_scope!r}")
        lo, hi = self.log_var_clamp
        if not lo < hi:
            raise ValueError("log_var_clamp must be (low, high) with low < high")
        if self.kl_coeff < 0 or self.kl_clamp <= 0:
            raise ValueError("kl_coeff must be >= 0 and kl_clamp > 0")
        if not (self.noise_scale > 0 and math.isfinite(self.noise_scale)):
            raise ValueError(f"noise_scale must be a positive finite number, got {self.noise_scale!r}")


#: recipe fields added after the store's keys were fixed: an SAE's store key holds them only where
#: they differ from its architecture's default, so SAEs trained before they existed keep their keys
RECIPE_FIELDS = ("subtract_b_dec", "unit_norm_decoder", "init", "b_dec_init", "noise_scale")


def recipe_defaults(architecture: str) -> dict[str, Any]:
    """The recipe fields' defaults of an architecture ("topk" or "vsae")."""
    cls = {"topk": TopKSAEConfig, "vsae": VSAEConfig}[architecture]
    return {f.name: f.default for f in dataclasses.fields(cls) if f.name in RECIPE_FIELDS}


def key_dict(cfg: TopKSAEConfig | VSAEConfig) -> dict[str, Any]:
    """``dataclasses.asdict(cfg)`` without the recipe fields that are at their default (see
    :data:`RECIPE_FIELDS`): what a trained SAE's store key is made of."""
    d = dataclasses.asdict(cfg)
    for name, default in recipe_defaults(cfg.architecture).items():
        if d[name] == default:
            del d[name]
    return d


def _check_common(cfg: TopKSAEConfig | VSAEConfig) -> None:
    if cfg.init not in ("topk", "vsae"):
        raise ValueError(f"init must be 'topk' or 'vsae', got {cfg.init!r}")
    if cfg.b_dec_init not in ("geometric_median", "zero"):
        raise ValueError(f"b_dec_init must be 'geometric_median' or 'zero', got {cfg.b_dec_init!r}")
    if cfg.d_in <= 0 or cfg.d_sae <= 0:
        raise ValueError("d_in and d_sae must be positive")
    if not 0 < cfg.k <= cfg.d_sae:
        raise ValueError(f"k must be in [1, d_sae={cfg.d_sae}], got {cfg.k}")
    if cfg.k_aux is None or cfg.k_aux <= 0:
        raise ValueError("k_aux must be positive")
    if cfg.auxk_alpha < 0 or cfg.dead_tokens_threshold <= 0:
        raise ValueError("auxk_alpha must be >= 0 and dead_tokens_threshold > 0")
    if cfg.act_scale <= 0:
        raise ValueError("act_scale must be positive")


class SAEOutput(NamedTuple):
    """Result of ``forward``. Losses are 0-dim tensors; per-token sums averaged over the batch."""

    #: reconstruction [..., d_in]
    x_hat: torch.Tensor
    #: values of the selected latents [..., k] (TopK: >= 0; vSAE: signed z)
    latents: torch.Tensor
    #: indices of the selected latents [..., k]
    indices: torch.Tensor
    #: total training loss (what ``backward`` is called on)
    loss: torch.Tensor
    #: mean over tokens of the summed squared error sum_d (x - x_hat)^2
    mse: torch.Tensor
    #: vSAE KL (unweighted, per token); 0 for the TopK SAE
    kl: torch.Tensor
    #: normalised AuxK loss (0 when nothing is dead or auxk_alpha == 0)
    auxk: torch.Tensor
    #: mean number of nonzero latents per token
    l0: torch.Tensor
    #: TopK control penalty 0.5 * sum a^2 (unweighted, per token); 0 otherwise
    l2_preact: torch.Tensor
    #: fraction of latents dead (by tokens_since_fired) after this batch; nan when not tracked
    frac_dead: torch.Tensor

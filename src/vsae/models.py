"""The two sparse autoencoders of the paper: the TopK SAE and the variational TopK SAE (vSAE).

Both follow the SAE interface shared by SAE Bench, SAELens and dictionary_learning:
parameters ``W_enc [d_in, d_sae]``, ``b_enc [d_sae]``, ``W_dec [d_sae, d_in]``, ``b_dec [d_in]``
(the vSAE with learned variance adds ``W_var [d_in, d_sae]`` and ``b_var [d_sae]``), a dataclass
``cfg`` and the methods ``encode`` / ``encode_topk`` / ``pre_acts`` / ``decode`` / ``forward``.

The recipes are those of the authors' code (``../shared/reference/paper-recipe.md`` section 2.2):

**TopK SAE** (dictionary_learning ``AutoEncoderTopK`` / ``TopKTrainer``)::

    a     = ReLU((x - b_dec) @ W_enc + b_enc)                 # pre_acts
    f     = TopK(a, k)
    x_hat = f @ W_dec + b_dec
    loss  = mean_batch sum_d (x - x_hat)^2 + auxk_alpha * AuxK
            [+ l2_preact_coeff * kl_scale * 0.5 * sum_i a_i^2]   (the control of issue 6, off by default)

**vSAE** (the authors' ``VSAETopK``, "april update" mode: no ``b_dec`` subtraction)::

    mu    = ReLU(x @ W_enc + b_enc)                           # pre_acts
    z     = mu                          var_mode="fixed"   (what the paper evaluated)
          = mu + eps                    var_mode="unit"    (the blog post; training only)
          = mu + exp(lv/2) * eps        var_mode="learned" (the abstract; training only),
                                        lv = clamp(x @ W_var + b_var, -6, 2)
    s     = TopK(|z|, k) keeping the sign of z
    x_hat = s @ W_dec + b_dec
    loss  = mean_batch sum_d (x - x_hat)^2 + kl_coeff * kl_scale * KL [+ auxk_alpha * AuxK]
    KL    = 0.5 * sum_i clamp(mu_i, -10, 10)^2                        fixed / unit
          = 0.5 * sum_i (clamp(mu_i, -10, 10)^2 + e^lv_i - 1 - lv_i)   learned
            summed over all latents (kl_scope="all", the paper) or the k selected ("topk")

For ``var_mode="fixed"`` z = mu, so the KL is the code's ``0.5 * sum clamp(z)^2``. For ``unit`` the
KL is the analytic KL(N(mu, 1) || N(0, 1)) = 0.5 * sum mu^2, i.e. the learned-variance formula with
lv = 0; it is computed on mu, not on the noisy sample z (whose square would add 0.5 per latent of
pure noise to the loss and the logs).

Speed (CPU): the encoder is one dense matmul; TopK uses a block-max prefilter (:func:`topk_select`);
the decoder and all backward passes that only touch the k selected latents are sparse
(``embedding_bag`` kernels and an MKL CSR product: :func:`gather_sum`, :func:`gather_dot`,
:func:`scatter_rows`, :class:`SparsePattern`), so a TopK training step costs one dense
``d_in x d_sae`` matmul per token plus O(k * d_in) work: no dense code, no dense decode, no dense
weight gradient. A dense penalty (KL over all latents, the L2 control) adds the one unavoidable dense
backward matmul (its derivative is formed in the forward pass and consumed in place). With
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

from __future__ import annotations

import copy
import dataclasses
import json
import math
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state", category=UserWarning)

__all__ = [
    "TopKSAEConfig",
    "VSAEConfig",
    "SAEOutput",
    "SAEBase",
    "TopKSAE",
    "VSAE",
    "build_sae",
    "load_sae",
    "geometric_median",
    "topk_select",
    "gather_sum",
    "gather_dot",
    "scatter_rows",
    "decoder_normalization_effect",
    "config_from_dict",
    "release_scratch",
    "SparsePattern",
]


# --------------------------------------------------------------------------------------------
# configs
# --------------------------------------------------------------------------------------------


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
    #: issue-6 control: weight of the penalty 0.5 * sum_i a_i^2 on all post-ReLU pre-activations
    #: (the vSAE's fixed-variance KL without clamp), warmed up like the KL. 0 = the paper's TopK.
    l2_preact_coeff: float = 0.0
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
    #: "fixed": z = mu (the evaluated runs); "unit": z = mu + eps (blog post);
    #: "learned": z = mu + sigma * eps with log sigma^2 = x @ W_var + b_var (abstract)
    var_mode: Literal["fixed", "unit", "learned"] = "fixed"
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


def _check_common(cfg: TopKSAEConfig | VSAEConfig) -> None:
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


def config_from_dict(d: dict) -> TopKSAEConfig | VSAEConfig:
    """Rebuild a config from its ``cfg.json`` dict (dispatch on ``architecture``)."""
    arch = d.get("architecture")
    cls = {"topk": TopKSAEConfig, "vsae": VSAEConfig}.get(arch)
    if cls is None:
        raise ValueError(f"unknown SAE architecture {arch!r} (expected 'topk' or 'vsae')")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - names
    if unknown:
        raise ValueError(f"unknown fields for {cls.__name__}: {sorted(unknown)}")
    return cls(**d)


# --------------------------------------------------------------------------------------------
# outputs
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# sparse kernels
# --------------------------------------------------------------------------------------------

_BAG_CACHE: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}


def _bags(n: int, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """offsets [n], offset2bag [n*k], bag_size [n] of n bags of k indices (cached)."""
    key = (n, k)
    hit = _BAG_CACHE.get(key)
    if hit is None:
        if len(_BAG_CACHE) > 32:
            _BAG_CACHE.clear()
        offsets = torch.arange(0, n * k, k, dtype=torch.long)
        offset2bag = torch.arange(n, dtype=torch.long).repeat_interleave(k)
        bag_size = torch.full((n,), k, dtype=torch.long)
        hit = _BAG_CACHE[key] = (offsets, offset2bag, bag_size)
    return hit


def _aten_ok() -> bool:
    try:
        w = torch.randn(5, 3)
        idx = torch.tensor([[0, 4], [2, 2]])
        y = torch.randn(2, 3)
        g = torch.randn(2, 2)
        offsets, o2b, bs = torch.tensor([0, 2]), torch.tensor([0, 0, 1, 1]), torch.tensor([2, 2])
        a = torch.ops.aten._embedding_bag_per_sample_weights_backward(
            y, w, idx.reshape(-1), offsets, o2b, 0, -1
        )
        b = torch.ops.aten._embedding_bag_dense_backward(
            y, idx.reshape(-1), o2b, bs, torch.empty(0, dtype=torch.long), 5, False, 0,
            g.reshape(-1), -1,
        )
        ref_a = (w[idx] * y[:, None, :]).sum(-1).reshape(-1)
        ref_b = torch.zeros(5, 3).index_add_(0, idx.reshape(-1), (g[..., None] * y[:, None]).reshape(-1, 3))
        return bool(torch.allclose(a, ref_a, atol=1e-5) and torch.allclose(b, ref_b, atol=1e-5))
    except Exception:  # pragma: no cover - depends on the torch build
        return False


#: whether the fast private ATen embedding_bag backward kernels are usable (checked once)
USE_ATEN_KERNELS: bool = _aten_ok()
_CHUNK = 256


def gather_sum(M: torch.Tensor, idx: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``out[n] = sum_j w[n, j] * M[idx[n, j]]`` -> [N, d] (``embedding_bag``; the sparse decode)."""
    return F.embedding_bag(idx, M, per_sample_weights=w.to(M.dtype), mode="sum")


def gather_dot(M: torch.Tensor, idx: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``out[n, j] = M[idx[n, j]] . y[n]`` -> [N, k] (the sparse decoder's value gradient)."""
    n, k = idx.shape
    y = y.contiguous()
    if USE_ATEN_KERNELS and M.dtype == y.dtype:
        offsets, o2b, _ = _bags(n, k)
        out = torch.ops.aten._embedding_bag_per_sample_weights_backward(
            y, M.contiguous(), idx.reshape(-1), offsets, o2b, 0, -1
        )
        return out.view(n, k)
    out = torch.empty(n, k, dtype=y.dtype)
    for s in range(0, n, _CHUNK):
        out[s : s + _CHUNK] = torch.bmm(M[idx[s : s + _CHUNK]], y[s : s + _CHUNK, :, None]).squeeze(-1)
    return out


def scatter_rows(idx: torch.Tensor, w: torch.Tensor, y: torch.Tensor, n_rows: int) -> torch.Tensor:
    """``out[r] = sum_{(n, j): idx[n, j] = r} w[n, j] * y[n]`` -> [n_rows, d].

    The transpose of a sparse [N, n_rows] matrix times y: the gradient of the decoder rows (and of
    the encoder columns) touched by the selected latents, without a dense [N, n_rows] matrix.
    Deterministic on CPU.
    """
    n, k = idx.shape
    y = y.contiguous()
    w = w.to(y.dtype).contiguous()
    if USE_ATEN_KERNELS:
        _, o2b, bag_size = _bags(n, k)
        return torch.ops.aten._embedding_bag_dense_backward(
            y, idx.reshape(-1), o2b, bag_size, torch.empty(0, dtype=torch.long), n_rows, False, 0,
            w.reshape(-1), -1,
        )
    out = torch.zeros(n_rows, y.shape[1], dtype=y.dtype)
    for s in range(0, n, _CHUNK):
        rows = (w[s : s + _CHUNK, :, None] * y[s : s + _CHUNK, None, :]).reshape(-1, y.shape[1])
        out.index_add_(0, idx[s : s + _CHUNK].reshape(-1), rows)
    return out


def topk_select(a: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k along the last dim of a 2-D tensor (unsorted), same values as ``torch.topk``.

    For k << width it first keeps the k blocks of 4 columns with the largest maxima (they contain a
    top-k set: any element outside them is <= the k kept block maxima) and runs ``topk`` on those
    4k candidates, which is about 1.3-2x faster than ``torch.topk`` on the full row on CPU.
    """
    n, width = a.shape
    m = 4
    if width % m or 32 * k > width or k < 16:
        return a.topk(k, dim=-1, sorted=False)
    bmax = a.view(n, width // m, m).amax(-1)
    bidx = bmax.topk(k, dim=-1, sorted=False).indices
    cidx = (bidx.unsqueeze(-1) * m + torch.arange(m, device=a.device)).view(n, k * m)
    vals, j = a.gather(1, cidx).topk(k, dim=-1, sorted=False)
    return vals, cidx.gather(1, j)


class SparsePattern:
    """The positions ``idx`` [N, k] of a sparse [N, n_rows] code, with a cached transpose.

    ``scatter_rows(w, y)`` computes ``S(w)^T @ y`` (S(w) the sparse matrix with values w at idx) as
    one MKL CSR matmul. The transpose structure (a stable sort of idx by latent) is built once and
    shared by every product with the same pattern (the encoder and decoder gradients of a step).
    Duplicate positions in a row add up. Deterministic on CPU.
    """

    def __init__(self, idx: torch.Tensor, n_rows: int):
        self.idx = idx
        self.n_rows = n_rows
        self._t: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def _transpose(self):
        if self._t is None:
            flat = self.idx.reshape(-1)
            order = torch.argsort(flat, stable=True)
            crow = torch.zeros(self.n_rows + 1, dtype=torch.long)
            torch.cumsum(torch.bincount(flat, minlength=self.n_rows), 0, out=crow[1:])
            cols = torch.div(order, self.idx.shape[1], rounding_mode="floor")
            self._t = (order, crow, cols)
        return self._t

    def scatter_rows(self, w: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # Dense when at least 1 in 64 entries of a row is selected: on CPUs without fast sparse
        # kernels (AVX2-only AMD, measured 2026-12-02 at N=192, k=256, F=4608, d=576) both sparse
        # products below take ~0.22 s against ~0.06 s for scattering into a dense [N, F] matrix
        # and one matmul; the same sums, in another order.
        if 64 * self.idx.shape[-1] >= self.n_rows:
            dense = torch.zeros(self.idx.shape[0], self.n_rows, dtype=y.dtype, device=y.device)
            dense.scatter_add_(1, self.idx, w.to(y.dtype))
            return dense.T @ y
        # MKL's CSR product pays two passes over the [n_rows, d] output; for few nonzeros the
        # embedding_bag kernel is cheaper
        if not USE_CSR or 32 * self.idx.numel() < self.n_rows * y.shape[1]:
            return scatter_rows(self.idx, w, y, self.n_rows)
        order, crow, cols = self._transpose()
        vals = w.reshape(-1).to(y.dtype)[order]
        st = torch.sparse_csr_tensor(crow, cols, vals, (self.n_rows, y.shape[0]), check_invariants=False)
        return torch.sparse.mm(st, y.contiguous())


def _csr_ok() -> bool:
    try:
        idx = torch.tensor([[0, 3, 3], [2, 0, 1]])
        w = torch.randn(2, 3)
        y = torch.randn(2, 4)
        ref = torch.zeros(5, 4).index_add_(0, idx.reshape(-1), (w[..., None] * y[:, None]).reshape(-1, 4))
        global USE_CSR
        USE_CSR = True
        out = SparsePattern(idx, 5).scatter_rows(w, y)
        return bool(torch.allclose(out, ref, atol=1e-5))
    except Exception:  # pragma: no cover
        return False


USE_CSR = True
USE_CSR = _csr_ok()


@torch.no_grad()
def geometric_median(points: torch.Tensor, max_iter: int = 100, tol: float = 1e-5) -> torch.Tensor:
    """Geometric median of the rows of ``points`` [N, d] by Weiszfeld's algorithm.

    Starts from the mean; stops after ``max_iter`` iterations or when the estimate moves by less
    than ``tol``. Distances are floored at 1e-12 so a data point coinciding with the estimate does
    not divide by zero.
    """
    pts = points.double()
    guess = pts.mean(0)
    for _ in range(max_iter):
        w = 1.0 / (pts - guess).norm(dim=1).clamp_min(1e-12)
        new = (w[:, None] * pts).sum(0) / w.sum()
        moved = float((new - guess).norm())
        guess = new
        if moved < tol:
            break
    return guess.to(points.dtype)


# --------------------------------------------------------------------------------------------
# autograd functions
# --------------------------------------------------------------------------------------------


class _SparseDecode(torch.autograd.Function):
    """x_hat[n] = sum_j w[n, j] W[idx[n, j]]; backward only touches the selected rows."""

    @staticmethod
    def forward(ctx, W: torch.Tensor, w: torch.Tensor, pat: SparsePattern) -> torch.Tensor:
        ctx.save_for_backward(W, w)
        ctx.pat = pat
        return gather_sum(W, pat.idx, w)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        W, w = ctx.saved_tensors
        pat = ctx.pat
        gW = pat.scatter_rows(w, g) if ctx.needs_input_grad[0] else None
        gw = gather_dot(W, pat.idx, g).to(w.dtype) if ctx.needs_input_grad[1] else None
        return gW, gw, None


class _Encoder(torch.autograd.Function):
    """Differentiable view of one encoder matmul ``pre = (x - shift) @ W + b`` (computed outside).

    Outputs the pre-activations at ``idx`` ([N, k'], given as ``vals``) and a scalar dense penalty
    (given as ``pen``, with its elementwise derivative ``d pen / d pre = dpen_scale * dpen``, dense
    [N, d_sae]; ``dpen`` is consumed in place by the backward pass).
    Backward: without a penalty gradient only the selected columns of W receive gradient
    (sparse, O(N k' d)); with one, the selected-value gradients are scattered into ``dpen`` and a
    single dense matmul ``(x - shift)^T @ grad_pre`` gives dW. ``x`` itself never gets a gradient;
    ``shift`` (the TopK SAE's b_dec) gets ``-W @ db``.
    """

    @staticmethod
    def forward(ctx, x, shift, W, b, pat, vals, pen, dpen, dpen_scale, mm_dtype):
        ctx.save_for_backward(x, shift, W, dpen)
        ctx.mm_dtype = mm_dtype
        ctx.dpen_scale = dpen_scale
        ctx.pat = pat
        return vals.clone(), pen.clone()

    @staticmethod
    def backward(ctx, g_vals, g_pen):
        x, shift, W, dpen = ctx.saved_tensors
        pat = ctx.pat
        idx = pat.idx
        need_shift, need_W, need_b = ctx.needs_input_grad[1], ctx.needs_input_grad[2], ctx.needs_input_grad[3]
        xc = x if shift is None else x - shift
        d_sae = W.shape[1]
        gW = gb = None
        if dpen is not None:
            gp = dpen.mul_((g_pen * ctx.dpen_scale).to(dpen.dtype))  # saved once, used once: in place
            if g_vals is not None:
                gp.scatter_add_(1, idx, g_vals.to(gp.dtype))
            if need_W:
                cd = ctx.mm_dtype
                xm, gm = (xc, gp.float()) if cd == torch.float32 else (xc.to(cd), gp.to(cd))
                if W.t().is_contiguous() and not W.is_contiguous():  # W stored d_sae-major
                    gW = gm.t().mm(xm).float().t()
                else:
                    gW = xm.t().mm(gm).float()
            gb = gp.sum(0, dtype=torch.float32)
        elif g_vals is not None:
            if need_W:
                gW = pat.scatter_rows(g_vals, xc).t()
            gb = torch.zeros(d_sae, dtype=g_vals.dtype).index_add_(0, idx.reshape(-1), g_vals.reshape(-1))
        g_shift = None
        if need_shift and gb is not None:
            g_shift = -(W @ gb)
        return None, g_shift, gW, gb if need_b else None, None, None, None, None, None, None


# --------------------------------------------------------------------------------------------
# base class
# --------------------------------------------------------------------------------------------


def _zero() -> torch.Tensor:
    return torch.zeros(())


def _relu_sq_penalty(pre: torch.Tensor, cap: float | None, need_grad: bool):
    """``0.5 * sum(min(ReLU(pre), cap)^2)`` (float32 scalar) and, if ``need_grad``, its derivative
    wrt pre (``ReLU(pre)`` where ``pre < cap``, else 0; dense, pre's dtype), in few passes."""
    m = pre.relu() if cap is None else pre.clamp(0.0, cap)
    flat = m.view(-1)
    if m.dtype == torch.float32:
        tot = torch.dot(flat, flat)
    else:
        tot = torch.linalg.vector_norm(flat, dtype=torch.float32).square()
    pen = 0.5 * tot
    if not need_grad:
        return pen, None
    if cap is not None:  # zero where the clamp saturates (and where pre <= 0, already 0)
        torch.ops.aten.hardtanh_backward.grad_input(m, pre, 0.0, cap, grad_input=m)
    return pen, m


_SCRATCH = threading.local()


def _scratch(slot: str, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """A per-thread reusable buffer (one per slot name; reallocated when shape or dtype change)."""
    bufs = getattr(_SCRATCH, "bufs", None)
    if bufs is None:
        bufs = _SCRATCH.bufs = {}
    t = bufs.get(slot)
    if t is None or t.shape != shape or t.dtype != dtype:
        t = bufs[slot] = torch.empty(shape, dtype=dtype)
    return t


def release_scratch() -> None:
    """Free the scratch buffers of the calling thread."""
    _SCRATCH.bufs = {}


class SAEBase(nn.Module):
    """Shared parts of :class:`TopKSAE` and :class:`VSAE`."""

    cfg: TopKSAEConfig | VSAEConfig
    W_enc: nn.Parameter
    b_enc: nn.Parameter
    W_dec: nn.Parameter
    b_dec: nn.Parameter

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        #: dtype of the dense encoder matmuls: float32, or bfloat16 (the encoder matmul, TopK selection
        #: and the selected values in bf16, the penalty's dense weight gradient as a bf16 matmul;
        #: weights, decoder, sparse gradients, losses and the optimizer stay float32)
        self.compute_dtype: torch.dtype = torch.float32
        #: RNG of the sampling noise (vSAE unit / learned); checkpointed by the trainer
        self.noise_generator = torch.Generator().manual_seed(cfg.seed + 1)

    # -- sizes and SAE Bench attributes
    @property
    def d_in(self) -> int:
        return self.cfg.d_in

    @property
    def d_sae(self) -> int:
        return self.cfg.d_sae

    @property
    def k(self) -> int:
        return self.cfg.k

    @property
    def device(self) -> torch.device:
        return self.W_enc.device

    @property
    def dtype(self) -> torch.dtype:
        return self.W_enc.dtype

    def extra_repr(self) -> str:
        return f"d_in={self.d_in}, d_sae={self.d_sae}, k={self.k}, act_scale={self.cfg.act_scale:g}"

    # -- pieces shared by both
    def _dense_pre(self, x2: torch.Tensor, W: torch.Tensor, b: torch.Tensor, shift: torch.Tensor | None, slot: str | None = None):
        """(x - shift) @ W + b, dense, in compute_dtype (float32 or bfloat16).

        With ``slot`` the result is written into a reused per-thread scratch buffer (no 100 MB
        allocation and page faults per training step); only for tensors that do not outlive the
        call that made them.
        """
        xc = x2 if shift is None else x2 - shift
        cd = self.compute_dtype
        out = _scratch(slot, (xc.shape[0], W.shape[1]), cd) if slot else None
        if cd == torch.float32:
            return torch.addmm(b, xc, W, out=out) if out is not None else torch.addmm(b, xc, W)
        args = (b.to(cd), xc.to(cd), W.to(cd))
        return torch.addmm(*args, out=out) if out is not None else torch.addmm(*args)

    @staticmethod
    def _vals_at(pre: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Pre-activations at idx as float32 (in bf16 mode: the bf16 matmul's values, upcast)."""
        return pre.gather(1, idx).float()

    def _encoder_out(self, x2, W, b, shift, pat: SparsePattern, vals, pen=None, dpen=None, dpen_scale=1.0):
        """Make the selected pre-activations ``vals`` (= pre at idx, computed without grad) and the
        dense penalty ``pen`` (derivative ``dpen_scale * dpen`` wrt pre, or None) differentiable
        in W, b, shift."""
        pen_t = _zero() if pen is None else pen
        wants = torch.is_grad_enabled() and (W.requires_grad or b.requires_grad)
        if not wants:
            return vals, pen_t
        return _Encoder.apply(x2, shift, W, b, pat, vals, pen_t, dpen, float(dpen_scale), self.compute_dtype)

    def decode_topk(self, values: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """Sparse decode: ``sum_j values[..., j] * W_dec[indices[..., j]] + b_dec`` -> [..., d_in]."""
        lead = values.shape[:-1]
        v = values.reshape(-1, values.shape[-1])
        pat = SparsePattern(indices.reshape(-1, indices.shape[-1]), self.d_sae)
        return self._decode_sparse(v, pat, bias=True).reshape(*lead, self.d_in)

    def _decode_sparse(self, v: torch.Tensor, pat: SparsePattern, bias: bool) -> torch.Tensor:
        if torch.is_grad_enabled() and (self.W_dec.requires_grad or v.requires_grad):
            out = _SparseDecode.apply(self.W_dec, v.float(), pat)
        else:
            out = gather_sum(self.W_dec, pat.idx, v)
        return out + self.b_dec if bias else out

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        """Dense decode of codes f [..., d_sae] -> [..., d_in] (``f @ W_dec + b_dec``)."""
        return f @ self.W_dec + self.b_dec

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Dense tensor of sparse codes [..., d_sae] (at most k nonzeros per token)."""
        vals, idx = self.encode_topk(x)
        out = torch.zeros(*vals.shape[:-1], self.d_sae, dtype=vals.dtype, device=vals.device)
        return out.scatter_(-1, idx, vals)

    def encode_topk(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Values [..., k] and indices [..., k] of the selected latents (eval: deterministic)."""
        out = self._run(x, compute_loss=False)
        return out.latents, out.indices

    def forward(
        self,
        x: torch.Tensor,
        *,
        kl_scale: float = 1.0,
        tokens_since_fired: torch.Tensor | None = None,
    ) -> SAEOutput:
        """Encode, decode and compute the loss terms on x [..., d_in].

        ``kl_scale`` is the warm-up factor of the KL (vSAE) or L2 (TopK control) penalty.
        ``tokens_since_fired`` [d_sae] (long), when given, is updated in place with this batch
        (add the batch size, reset latents that fired, i.e. were selected with a positive
        activation: ReLU value for the TopK SAE, mu for the vSAE)
        and then defines the dead latents of AuxK (``>= cfg.dead_tokens_threshold``), as in
        dictionary_learning. Without it AuxK is 0.
        """
        return self._run(x, compute_loss=True, kl_scale=kl_scale, tokens_since_fired=tokens_since_fired)

    def _run(self, x, compute_loss, kl_scale=1.0, tokens_since_fired=None) -> SAEOutput:  # pragma: no cover
        raise NotImplementedError

    # -- AuxK and dead-latent bookkeeping
    @torch.no_grad()
    def _update_dead(self, tsf: torch.Tensor | None, idx: torch.Tensor, vals: torch.Tensor, n_tok: int):
        if tsf is None:
            return None
        fired = idx[vals != 0]
        tsf += n_tok
        tsf[fired] = 0
        return tsf >= self.cfg.dead_tokens_threshold

    @torch.no_grad()
    def _aux_indices(self, score: torch.Tensor, dead: torch.Tensor) -> torch.Tensor:
        """Indices [N, k_aux'] of the dead latents with the largest score per token."""
        dead_idx = dead.nonzero().squeeze(1)
        k_aux = min(int(self.cfg.k_aux), dead_idx.numel())
        cand = score.index_select(1, dead_idx)
        j = topk_select(cand, k_aux)[1]
        return dead_idx[j]

    def _auxk_loss(self, e: torch.Tensor, aux_idx: torch.Tensor, aux_vals: torch.Tensor) -> torch.Tensor:
        """OpenAI / dictionary_learning AuxK: the dead latents reconstruct the detached residual
        (decoder without bias), normalised by the residual's variance sum_d (e - mean_batch e)^2."""
        e = e.detach()
        e_hat = self._decode_sparse(aux_vals, SparsePattern(aux_idx, self.d_sae), bias=False)
        num = (e - e_hat).pow(2).sum(-1).mean()
        den = (e - e.mean(0, keepdim=True)).pow(2).sum(-1).mean()
        return (num / den).nan_to_num(0.0)

    # -- export
    @torch.no_grad()
    def fold_activation_scale(self, s: float) -> "SAEBase":
        """Make this SAE (trained on x / s) run on raw x: biases times s, ``cfg.act_scale *= s``.

        Afterwards ``sae(x)`` gives codes and reconstruction ``s *`` those of the old SAE on
        ``x / s``, with the same selected latents; the KL / L2 penalty read ``cfg.act_scale`` and
        are unchanged. In place; returns self.
        """
        s = float(s)
        if s <= 0:
            raise ValueError("scale must be positive")
        self.b_enc.mul_(s)
        self.b_dec.mul_(s)
        self._fold_extra(s)
        self.cfg.act_scale *= s
        return self

    def _fold_extra(self, s: float) -> None:
        pass

    def tensors(self) -> dict[str, torch.Tensor]:
        return {n: p.detach().contiguous() for n, p in self.named_parameters()}

    def save(self, path: str | Path) -> Path:
        """Write ``cfg.json`` and ``sae.safetensors`` into the folder ``path``."""
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        cfg = dataclasses.asdict(self.cfg)
        _atomic_write_text(path / "cfg.json", json.dumps(cfg, indent=2, sort_keys=True, default=_json_default))
        tmp = path / "sae.safetensors.tmp"
        save_file({n: t.cpu() for n, t in self.tensors().items()}, str(tmp), metadata={"architecture": self.cfg.architecture})
        tmp.replace(path / "sae.safetensors")
        return path

    def copy(self) -> "SAEBase":
        new = copy.deepcopy(self)
        return new


def _json_default(o):
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, torch.dtype):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


# --------------------------------------------------------------------------------------------
# TopK SAE
# --------------------------------------------------------------------------------------------


class TopKSAE(SAEBase):
    """TopK SAE: ``f = TopK(ReLU((x - b_dec) @ W_enc + b_enc), k)``, ``x_hat = f @ W_dec + b_dec``.

    Init (dictionary_learning): decoder as ``nn.Linear(d_sae, d_in)`` (uniform +-1/sqrt(d_sae)),
    rows then scaled to unit norm; ``W_enc = W_dec^T``; ``b_enc = 0``; ``b_dec = 0`` until the trainer
    sets it to the geometric median of the first batch (:meth:`init_b_dec`). In training the decoder
    rows are kept at unit norm (:meth:`project_decoder_grad`, :meth:`normalize_decoder_rows_`).
    """

    cfg: TopKSAEConfig

    def __init__(self, cfg: TopKSAEConfig):
        super().__init__(cfg)
        g = torch.Generator().manual_seed(cfg.seed)
        bound = 1.0 / math.sqrt(cfg.d_sae)
        w = (torch.rand(cfg.d_in, cfg.d_sae, generator=g) * 2 - 1) * bound  # nn.Linear(d_sae, d_in).weight
        w_dec = w.t().contiguous()
        w_dec /= w_dec.norm(dim=1, keepdim=True)
        self.W_dec = nn.Parameter(w_dec)
        self.W_enc = nn.Parameter(w_dec.t().contiguous())
        self.b_enc = nn.Parameter(torch.zeros(cfg.d_sae))
        self.b_dec = nn.Parameter(torch.zeros(cfg.d_in))

    @torch.no_grad()
    def init_b_dec(self, x: torch.Tensor) -> None:
        """b_dec <- geometric median of a batch x [N, d_in] (Weiszfeld, <= 100 iterations, tol 1e-5)."""
        self.b_dec.copy_(geometric_median(x.reshape(-1, self.d_in).float()))

    def pre_acts(self, x: torch.Tensor) -> torch.Tensor:
        """Dense post-ReLU pre-TopK activations ``ReLU((x - b_dec) @ W_enc + b_enc)`` [..., d_sae]."""
        x2 = x.reshape(-1, self.d_in)
        pre = self._dense_pre(x2, self.W_enc, self.b_enc, self.b_dec).float()
        return pre.relu_().reshape(*x.shape[:-1], self.d_sae)

    def _run(self, x, compute_loss, kl_scale=1.0, tokens_since_fired=None) -> SAEOutput:
        cfg = self.cfg
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.d_in).float()
        n = x2.shape[0]
        W, b, shift = self.W_enc, self.b_enc, self.b_dec
        want_grad = compute_loss and torch.is_grad_enabled() and cfg.l2_preact_coeff * kl_scale > 0
        with torch.no_grad():
            pre = self._dense_pre(x2, W, b, shift, slot="pre" if compute_loss else None)
            _, idx = topk_select(pre, cfg.k)  # ReLU is monotone: TopK(ReLU(a)) = ReLU(TopK(a))
            raw = self._vals_at(pre, idx)
            if not compute_loss:
                z = _zero()
                v = raw.relu_().reshape(*lead, cfg.k)
                return SAEOutput(None, v, idx.reshape(*lead, cfg.k), z, z, z, z, z, z, z)  # type: ignore[arg-type]
            # dead bookkeeping and AuxK candidates
            dead = self._update_dead(tokens_since_fired, idx, raw.relu(), n)
            aux_idx = None
            if cfg.auxk_alpha > 0 and dead is not None and bool(dead.any()):
                aux_idx = self._aux_indices(pre, dead)
                idx_all = torch.cat([idx, aux_idx], 1)
                raw = torch.cat([raw, self._vals_at(pre, aux_idx)], 1)
            else:
                idx_all = idx
            # L2 control penalty 0.5 * sum relu(a / s)^2 (per token) and its derivative wrt a
            pen = dpen = None
            dscale = 1.0
            if cfg.l2_preact_coeff > 0:
                s = cfg.act_scale
                pen, dpen = _relu_sq_penalty(pre, None, want_grad)
                pen = pen / (s * s * n)
                dscale = 1.0 / (s * s * n)
        pat = SparsePattern(idx, self.d_sae)
        pat_all = pat if aux_idx is None else SparsePattern(idx_all, self.d_sae)
        sel, l2 = self._encoder_out(x2, W, b, shift, pat_all, raw, pen, dpen, dscale)
        del pre, dpen
        sel = sel.relu()
        vals = sel[:, : cfg.k]
        x_hat = self._decode_sparse(vals, pat, bias=True)
        e = x2 - x_hat
        mse = e.pow(2).sum(-1).mean()
        auxk = _zero()
        if aux_idx is not None:
            auxk = self._auxk_loss(e, aux_idx, sel[:, cfg.k :])
        loss = mse + cfg.auxk_alpha * auxk
        if cfg.l2_preact_coeff > 0:
            loss = loss + (cfg.l2_preact_coeff * kl_scale) * l2
        l0 = (vals.detach() != 0).sum(-1).float().mean()
        frac_dead = dead.float().mean() if dead is not None else torch.tensor(float("nan"))
        return SAEOutput(
            x_hat.reshape(*lead, self.d_in), vals.reshape(*lead, cfg.k), idx.reshape(*lead, cfg.k),
            loss, mse, _zero(), auxk, l0, l2.detach(), frac_dead,
        )

    # -- decoder constraint
    @torch.no_grad()
    def project_decoder_grad(self) -> None:
        """Remove from each decoder row's gradient its component parallel to the row."""
        g = self.W_dec.grad
        if g is None:
            return
        W = self.W_dec
        # g_i -= (g_i . u_i) u_i with u_i = W_i / |W_i|, i.e. g_i -= (g_i . W_i / W_i . W_i) W_i
        coef = torch.linalg.vecdot(g, W).div_(torch.linalg.vector_norm(W, dim=1).square_().clamp_min_(1e-24))
        g.addcmul_(coef.unsqueeze(1), W, value=-1.0)

    @torch.no_grad()
    def normalize_decoder_rows_(self) -> None:
        """Rescale every decoder row to unit norm (in place)."""
        self.W_dec.mul_(self.W_dec.norm(dim=1, keepdim=True).clamp_min_(1e-12).reciprocal_())


# --------------------------------------------------------------------------------------------
# vSAE
# --------------------------------------------------------------------------------------------


class VSAE(SAEBase):
    """Variational TopK SAE: ``mu = ReLU(x @ W_enc + b_enc)``, TopK on |z| keeping the sign.

    Init (authors' code): W ~ N(0, 1) [d_sae, d_in], each latent's vector rescaled to norm 0.1,
    ``W_dec = W``, ``W_enc = W^T``, biases 0; learned mode: ``W_var`` Kaiming-uniform (a = 0.01,
    fan_in = d_in), ``b_var = log_var_init``. The decoder is unconstrained in training. Sampling
    (unit / learned) happens only in training mode (``model.train()``), from
    ``self.noise_generator``; in eval mode z = mu.
    """

    cfg: VSAEConfig

    def __init__(self, cfg: VSAEConfig):
        super().__init__(cfg)
        g = torch.Generator().manual_seed(cfg.seed)
        w = torch.randn(cfg.d_sae, cfg.d_in, generator=g)
        w = 0.1 * w / w.norm(dim=1, keepdim=True)
        self.W_dec = nn.Parameter(w.clone())
        self.W_enc = nn.Parameter(w.t().contiguous())
        self.b_enc = nn.Parameter(torch.zeros(cfg.d_sae))
        self.b_dec = nn.Parameter(torch.zeros(cfg.d_in))
        if cfg.var_mode == "learned":
            a = 0.01
            bound = math.sqrt(2.0 / (1 + a * a)) * math.sqrt(3.0 / cfg.d_in)
            wv = (torch.rand(cfg.d_sae, cfg.d_in, generator=g) * 2 - 1) * bound
            self.W_var = nn.Parameter(wv.t().contiguous())
            self.b_var = nn.Parameter(torch.full((cfg.d_sae,), float(cfg.log_var_init)))

    def pre_acts(self, x: torch.Tensor) -> torch.Tensor:
        """Dense mu = ReLU(x @ W_enc + b_enc) [..., d_sae] (the deterministic pre-TopK activations)."""
        x2 = x.reshape(-1, self.d_in)
        pre = self._dense_pre(x2, self.W_enc, self.b_enc, None).float()
        return pre.relu_().reshape(*x.shape[:-1], self.d_sae)

    def _log_var_n(self, lv_raw: torch.Tensor) -> torch.Tensor:
        """log sigma^2 in training units, clamped."""
        lo, hi = self.cfg.log_var_clamp
        off = 2.0 * math.log(self.cfg.act_scale)
        return (lv_raw - off).clamp(lo, hi) if off else lv_raw.clamp(lo, hi)

    def _run(self, x, compute_loss, kl_scale=1.0, tokens_since_fired=None) -> SAEOutput:
        cfg = self.cfg
        s = cfg.act_scale
        c = cfg.kl_clamp
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.d_in).float()
        n = x2.shape[0]
        W, b = self.W_enc, self.b_enc
        learned = cfg.var_mode == "learned"
        sample = self.training and cfg.var_mode != "fixed"
        dense_kl = compute_loss and cfg.kl_scope == "all"
        want_grad = compute_loss and torch.is_grad_enabled() and cfg.kl_coeff * kl_scale > 0
        Wv = bv = lv_pre = eps = sigma = None
        with torch.no_grad():
            pre = self._dense_pre(x2, W, b, None, slot="pre" if compute_loss else None)
            if learned and (sample or compute_loss):
                Wv, bv = self.W_var, self.b_var
                lv_pre = self._dense_pre(x2, Wv, bv, None, slot="lv_pre" if compute_loss else None)
            if sample:
                eps = torch.randn(pre.shape, generator=self.noise_generator)
                z = pre.float().relu()
                if learned:
                    sigma = self._log_var_n(lv_pre.float()).mul_(0.5).exp_().mul_(s)
                    z.addcmul_(sigma, eps)
                else:
                    z.add_(eps, alpha=s)
                score = z.abs_()
                del z
            else:
                score = pre  # z = mu = ReLU(pre) >= 0, so TopK(|z|) = TopK(pre)
            _, idx = topk_select(score, cfg.k)

            def noise_at(ix):
                e_ = eps.gather(1, ix)
                return e_.mul_(s) if sigma is None else e_.mul_(sigma.gather(1, ix))

            raw = self._vals_at(pre, idx)
            z_sel = raw.relu()
            if sample:
                z_sel += noise_at(idx)
            if not compute_loss:
                zt = _zero()
                return SAEOutput(None, z_sel.reshape(*lead, cfg.k), idx.reshape(*lead, cfg.k), zt, zt, zt, zt, zt, zt, zt)  # type: ignore[arg-type]

            # dead bookkeeping (fired = selected with mu > 0, so noise alone does not keep a latent
            # alive) and AuxK candidates (dead latents ranked by |z|)
            dead = self._update_dead(tokens_since_fired, idx, raw.relu(), n)
            aux_idx = None
            idx_all = idx
            if cfg.auxk_alpha > 0 and dead is not None and bool(dead.any()):
                aux_idx = self._aux_indices(score, dead)
                idx_all = torch.cat([idx, aux_idx], 1)
                raw = torch.cat([raw, self._vals_at(pre, aux_idx)], 1)
            del score
            lv_raw = self._vals_at(lv_pre, idx_all) if lv_pre is not None else None
            eps_all = eps.gather(1, idx_all) if sample else None  # unit normal noise at the selection

            # dense KL over all latents: mu part (through W_enc) and variance part (through W_var)
            pen_mu = dpen_mu = pen_v = dpen_v = None
            if dense_kl:
                # 0.5 * sum min(relu(pre) / s, c)^2; derivative relu(pre) / s^2 below the clamp, else 0
                pen_mu, dpen_mu = _relu_sq_penalty(pre, c * s, want_grad)
                pen_mu = pen_mu / (s * s * n)
                if learned:
                    lvf = lv_pre.float()
                    lvn = self._log_var_n(lvf)
                    pen_v = 0.5 * (lvn.exp() - 1.0 - lvn).sum() / n
                    if want_grad:
                        lo, hi = cfg.log_var_clamp
                        off = 2.0 * math.log(s)
                        inside = (lvf > lo + off) & (lvf < hi + off)
                        dpen_v = lvn.exp_().sub_(1.0).mul_(0.5).mul_(inside).to(lv_pre.dtype)
                        del inside
                    del lvn, lvf
            del pre, lv_pre, eps, sigma

        # differentiable selected values (main k, then AuxK)
        pat = SparsePattern(idx, self.d_sae)
        pat_all = pat if aux_idx is None else SparsePattern(idx_all, self.d_sae)
        sel_pre, kl_mu = self._encoder_out(x2, W, b, None, pat_all, raw, pen_mu, dpen_mu, 1.0 / (s * s * n))
        del dpen_mu
        mu_sel = sel_pre.relu()
        lv_n_sel = None
        kl_v = _zero()
        if learned:
            sel_lv, kl_v = self._encoder_out(x2, Wv, bv, None, pat_all, lv_raw, pen_v, dpen_v, 1.0 / n)
            del dpen_v
            lv_n_sel = self._log_var_n(sel_lv)
        if sample:
            sd = s if lv_n_sel is None else s * torch.exp(0.5 * lv_n_sel)  # sigma in input units
            z_all = mu_sel + sd * eps_all
        else:
            z_all = mu_sel

        vals = z_all[:, : cfg.k]
        x_hat = self._decode_sparse(vals, pat, bias=True)
        e = x2 - x_hat
        mse = e.pow(2).sum(-1).mean()

        if cfg.kl_scope == "all":
            kl = kl_mu + kl_v
        else:
            mk = (mu_sel[:, : cfg.k] / s).clamp(-c, c)
            kl = 0.5 * mk.pow(2).sum(-1).mean()
            if learned:
                lv_k = lv_n_sel[:, : cfg.k]
                kl = kl + 0.5 * (lv_k.exp() - 1.0 - lv_k).sum(-1).mean()
        auxk = _zero()
        if aux_idx is not None:
            auxk = self._auxk_loss(e, aux_idx, z_all[:, cfg.k :])
        loss = mse + (cfg.kl_coeff * kl_scale) * kl + cfg.auxk_alpha * auxk
        l0 = (vals.detach() != 0).sum(-1).float().mean()
        frac_dead = dead.float().mean() if dead is not None else torch.tensor(float("nan"))
        return SAEOutput(
            x_hat.reshape(*lead, self.d_in), vals.reshape(*lead, cfg.k), idx.reshape(*lead, cfg.k),
            loss, mse, kl.detach(), auxk, l0, _zero(), frac_dead,
        )

    def _fold_extra(self, s: float) -> None:
        if self.cfg.var_mode == "learned":
            # log sigma_raw^2 = log sigma^2 + 2 log s, with log sigma^2 computed from x / s
            self.W_var.div_(s)
            self.b_var.add_(2.0 * math.log(s))

    @torch.no_grad()
    def normalized_decoder(self) -> "VSAE":
        """A copy with unit-norm decoder rows (the paper's evaluation-time export).

        ``W_dec[i] /= n_i``, ``W_enc[:, i] *= n_i``, ``b_enc[i] *= n_i`` (n_i = ||W_dec[i]||; learned
        mode: ``b_var[i] += 2 log n_i``). Each latent's contribution mu_i * W_dec[i] is unchanged, but
        TopK now ranks n_i * mu_i instead of mu_i, so the selected latents (and the reconstruction)
        can change: see :func:`decoder_normalization_effect`. Training-only terms (KL) are no longer
        comparable with the trained model's; the export is for inference.
        """
        new = self.copy()
        nrm = new.W_dec.norm(dim=1).clamp_min(1e-12)
        new.W_dec.div_(nrm[:, None])
        new.W_enc.mul_(nrm[None, :])
        new.b_enc.mul_(nrm)
        if new.cfg.var_mode == "learned":
            new.b_var.add_(2.0 * torch.log(nrm))
        new.cfg.decoder_normalized = True
        return new

    def save(self, path: str | Path, normalize_decoder: bool = False) -> Path:  # type: ignore[override]
        """Write ``cfg.json`` + ``sae.safetensors``; ``normalize_decoder=True`` exports
        :meth:`normalized_decoder` instead of the model as trained."""
        if normalize_decoder and not self.cfg.decoder_normalized:
            return self.normalized_decoder().save(path)
        return super().save(path)


# --------------------------------------------------------------------------------------------
# factory / io / analysis
# --------------------------------------------------------------------------------------------


def build_sae(cfg: TopKSAEConfig | VSAEConfig) -> TopKSAE | VSAE:
    """Instantiate the SAE described by ``cfg``."""
    if isinstance(cfg, TopKSAEConfig):
        return TopKSAE(cfg)
    if isinstance(cfg, VSAEConfig):
        return VSAE(cfg)
    raise TypeError(f"not an SAE config: {type(cfg).__name__}")


def load_sae(path: str | Path, device: str | torch.device = "cpu") -> TopKSAE | VSAE:
    """Load an SAE saved by ``save`` (dispatch on ``cfg.json`` "architecture"); eval mode."""
    from safetensors.torch import load_file

    path = Path(path)
    cfg = config_from_dict(json.loads((path / "cfg.json").read_text()))
    sae = build_sae(cfg)
    state = load_file(str(path / "sae.safetensors"))
    sae.load_state_dict(state, strict=True)
    return sae.to(device).eval()


@torch.no_grad()
def decoder_normalization_effect(sae: VSAE, x: torch.Tensor, batch_size: int = 4096) -> dict[str, float]:
    """How much the evaluation-time decoder normalisation changes a vSAE's codes on x [N, d_in].

    Returns ``frac_changed_indices`` (mean over tokens of the fraction of the trained model's active
    latents that are not active after normalisation), ``frac_tokens_changed`` (tokens whose active
    set changed), ``rel_code_change`` (||f_norm - n * f||_F / ||n * f||_F, i.e. the normalised
    model's codes against the trained codes expressed in the normalised basis), ``rel_recon_change``
    (||x_hat_norm - x_hat|| / ||x_hat - b_dec||) and both models' mean summed squared errors.
    """
    was = sae.training
    sae.eval()
    other = sae.normalized_decoder().eval()
    nrm = sae.W_dec.norm(dim=1)
    x = x.reshape(-1, sae.d_in)
    changed = tok_changed = 0.0
    num = den = rnum = rden = mse_a = mse_b = 0.0
    for s in range(0, x.shape[0], batch_size):
        xb = x[s : s + batch_size].float()
        va, ia = sae.encode_topk(xb)
        vb, ib = other.encode_topk(xb)
        fa = torch.zeros(xb.shape[0], sae.d_sae).scatter_(1, ia, va) * nrm
        fb = torch.zeros(xb.shape[0], sae.d_sae).scatter_(1, ib, vb)
        act_a, act_b = fa != 0, fb != 0
        n_a = act_a.sum(1).clamp_min(1)
        lost = (act_a & ~act_b).sum(1)
        changed += float((lost / n_a).sum())
        tok_changed += float((act_a != act_b).any(1).sum())
        num += float((fb - fa).pow(2).sum())
        den += float(fa.pow(2).sum())
        xa_hat = sae.decode_topk(va, ia)
        xb_hat = other.decode_topk(vb, ib)
        rnum += float((xb_hat - xa_hat).pow(2).sum())
        rden += float((xa_hat - sae.b_dec).pow(2).sum())
        mse_a += float((xb - xa_hat).pow(2).sum())
        mse_b += float((xb - xb_hat).pow(2).sum())
    sae.train(was)
    n = x.shape[0]
    return {
        "frac_changed_indices": changed / n,
        "frac_tokens_changed": tok_changed / n,
        "rel_code_change": math.sqrt(num / den) if den > 0 else 0.0,
        "rel_recon_change": math.sqrt(rnum / rden) if rden > 0 else 0.0,
        "mse_trained": mse_a / n,
        "mse_normalized": mse_b / n,
        "decoder_norm_min": float(nrm.min()),
        "decoder_norm_max": float(nrm.max()),
    }

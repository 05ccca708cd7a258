"""What the TopK SAE and the vSAE share: the SAE interface (``W_enc [d_in, d_sae]``, ``W_dec
[d_sae, d_in]``, ``b_enc``, ``b_dec``, ``encode`` / ``encode_topk`` / ``decode`` / ``forward``), the
dense encoder matmul, the sparse decode, AuxK and dead-latent bookkeeping, and ``save``.
"""

from __future__ import annotations

import copy
import math
import dataclasses
from pathlib import Path

import torch
import torch.nn as nn

from ..files import atomic_write, atomic_write_json
from .config import SAEOutput, TopKSAEConfig, VSAEConfig
from .kernels import SparsePattern, _Encoder, _scratch, _SparseDecode, _zero, gather_sum, topk_select


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


def init_weights(cfg: TopKSAEConfig | VSAEConfig, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``(W_dec [d_sae, d_in], W_enc [d_in, d_sae])`` of ``cfg.init``, tied (``W_enc = W_dec^T``):

    - ``"topk"`` (dictionary_learning ``AutoEncoderTopK``): ``nn.Linear(d_sae, d_in)``'s uniform
      +-1/sqrt(d_sae) init, decoder rows scaled to unit norm;
    - ``"vsae"`` (the authors' ``VSAETopK``): N(0, 1) rows scaled to norm 0.1.
    """
    if cfg.init == "topk":
        bound = 1.0 / math.sqrt(cfg.d_sae)
        w = (torch.rand(cfg.d_in, cfg.d_sae, generator=g) * 2 - 1) * bound  # nn.Linear(d_sae, d_in).weight
        w_dec = w.t().contiguous()
        w_dec /= w_dec.norm(dim=1, keepdim=True)
        return w_dec, w_dec.t().contiguous()
    w = torch.randn(cfg.d_sae, cfg.d_in, generator=g)
    w = 0.1 * w / w.norm(dim=1, keepdim=True)
    return w.clone(), w.t().contiguous()


def working_precision(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float32 (bfloat16 / float16 inputs upcast), or float64 when it is float64: an SAE cast
    with ``.double()`` then computes in float64 throughout (the precision check of ``tests/interop``);
    float32 inputs are returned unchanged."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


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

    def _init_parameters(self) -> torch.Generator:
        """W_dec, W_enc (:func:`init_weights` of ``cfg.init``), b_enc = b_dec = 0; returns the seeded
        generator, for parameters a subclass draws after these (the vSAE's variance head)."""
        cfg = self.cfg
        g = torch.Generator().manual_seed(cfg.seed)
        w_dec, w_enc = init_weights(cfg, g)
        self.W_dec = nn.Parameter(w_dec)
        self.W_enc = nn.Parameter(w_enc)
        self.b_enc = nn.Parameter(torch.zeros(cfg.d_sae))
        self.b_dec = nn.Parameter(torch.zeros(cfg.d_in))
        return g

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
        allocation and page faults per training step or evaluation chunk: slot ``"pre"`` in
        training, ``"pre_eval"`` when encoding for an evaluation); only for tensors that do not
        outlive the call that made them.
        """
        xc = x2 if shift is None else x2 - shift
        cd = self.compute_dtype
        dt = cd if cd != torch.float32 else torch.promote_types(xc.dtype, W.dtype)  # float64 SAEs stay float64
        out = _scratch(slot, (xc.shape[0], W.shape[1]), dt) if slot else None
        if cd == torch.float32:
            return torch.addmm(b, xc, W, out=out) if out is not None else torch.addmm(b, xc, W)
        args = (b.to(cd), xc.to(cd), W.to(cd))
        return torch.addmm(*args, out=out) if out is not None else torch.addmm(*args)

    @staticmethod
    def _vals_at(pre: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Pre-activations at idx as float32 (in bf16 mode: the bf16 matmul's values, upcast; an SAE
        cast to float64 for a precision check keeps float64)."""
        return pre.gather(1, idx).to(torch.promote_types(pre.dtype, torch.float32))

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

    # -- recipe choices shared by both architectures (see the config's recipe fields)
    def _shift(self) -> torch.Tensor | None:
        """What the encoder subtracts from x: ``b_dec`` when ``cfg.subtract_b_dec``, else nothing."""
        return self.b_dec if self.cfg.subtract_b_dec else None

    @torch.no_grad()
    def init_b_dec(self, x: torch.Tensor) -> None:
        """b_dec <- geometric median of a batch x [N, d_in] (Weiszfeld, <= 100 iterations, tol 1e-5)."""
        self.b_dec.copy_(geometric_median(x.reshape(-1, self.d_in).float()))

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
        from safetensors.torch import save

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path / "cfg.json", dataclasses.asdict(self.cfg), default=_json_default)
        tensors = {n: t.cpu() for n, t in self.tensors().items()}
        atomic_write(path / "sae.safetensors", save(tensors, metadata={"architecture": self.cfg.architecture}))
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

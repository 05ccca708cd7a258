"""The TopK SAE, the paper's baseline (dictionary_learning ``trainers/top_k.py``: ``AutoEncoderTopK``
and ``TopKTrainer``; Gao et al. 2024, "Scaling and evaluating sparse autoencoders", section 2.3)::

    a     = ReLU((x - b_dec) @ W_enc + b_enc)                 # pre_acts
    f     = TopK(a, k)
    x_hat = f @ W_dec + b_dec
    loss  = mean_batch sum_d (x - x_hat)^2 + auxk_alpha * AuxK
            [+ l2_preact_coeff * kl_scale * 0.5 * sum_i a_i^2]   (the L2 control, off by default)
"""

from __future__ import annotations

import torch

from .base import SAEBase, geometric_median, working_precision  # noqa: F401 - geometric_median re-exported
from .config import SAEOutput, TopKSAEConfig
from .kernels import SparsePattern, _relu_sq_penalty, _zero, topk_select


class TopKSAE(SAEBase):
    """TopK SAE: ``f = TopK(ReLU((x - b_dec) @ W_enc + b_enc), k)``, ``x_hat = f @ W_dec + b_dec``.

    Init (dictionary_learning; ``cfg.init = "topk"``): decoder as ``nn.Linear(d_sae, d_in)`` (uniform
    +-1/sqrt(d_sae)), rows then scaled to unit norm; ``W_enc = W_dec^T``; ``b_enc = 0``; ``b_dec = 0``
    until the trainer sets it to the geometric median of the first batch (:meth:`init_b_dec`). In
    training the decoder rows are kept at unit norm (:meth:`project_decoder_grad`,
    :meth:`normalize_decoder_rows_`). The recipe fields of the config flip each of these choices.
    """

    cfg: TopKSAEConfig

    def __init__(self, cfg: TopKSAEConfig):
        super().__init__(cfg)
        self._init_parameters()

    def pre_acts(self, x: torch.Tensor) -> torch.Tensor:
        """Dense post-ReLU pre-TopK activations ``ReLU((x - b_dec) @ W_enc + b_enc)`` [..., d_sae]."""
        x2 = x.reshape(-1, self.d_in)
        pre = self._dense_pre(x2, self.W_enc, self.b_enc, self._shift()).float()
        return pre.relu_().reshape(*x.shape[:-1], self.d_sae)

    def _run(self, x, compute_loss, kl_scale=1.0, tokens_since_fired=None) -> SAEOutput:
        cfg = self.cfg
        lead = x.shape[:-1]
        x2 = working_precision(x.reshape(-1, self.d_in))
        n = x2.shape[0]
        W, b, shift = self.W_enc, self.b_enc, self._shift()
        want_grad = compute_loss and torch.is_grad_enabled() and cfg.l2_preact_coeff * kl_scale > 0
        with torch.no_grad():
            pre = self._dense_pre(x2, W, b, shift, slot="pre" if compute_loss else "pre_eval")
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


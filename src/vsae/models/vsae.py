"""The variational TopK SAE (vSAE) of Baker & Li 2025, section 2 "Method": the authors' ``VSAETopK``
("vae_topk_v2", "april update" mode: no ``b_dec`` subtraction)::

    mu    = ReLU(x @ W_enc + b_enc)                           # pre_acts
    z     = mu                          var_mode="fixed"   (what the paper evaluated)
          = mu + sigma_u * eps          var_mode="unit"    (the blog post, sigma_u = noise_scale = 1; training only)
          = mu + exp(lv/2) * eps        var_mode="learned" (the abstract; training only),
                                        lv = clamp(x @ W_var + b_var, -6, 2)
    s     = TopK(|z|, k) keeping the sign of z
    x_hat = s @ W_dec + b_dec
    loss  = mean_batch sum_d (x - x_hat)^2 + kl_coeff * kl_scale * KL [+ auxk_alpha * AuxK]
    KL    = 0.5 * sum_i clamp(mu_i, -10, 10)^2                        fixed / unit
          = 0.5 * sum_i (clamp(mu_i, -10, 10)^2 + e^lv_i - 1 - lv_i)   learned
            summed over all latents (kl_scope="all", the paper) or the k selected ("topk")

For ``var_mode="fixed"`` z = mu, so the KL is the code's ``0.5 * sum clamp(z)^2``. For ``unit`` the KL
is the analytic KL(N(mu, 1) || N(0, 1)) = 0.5 * sum mu^2, i.e. the learned-variance formula with
lv = 0; it is computed on mu, not on the noisy sample z (whose square would add 0.5 per latent of
pure noise to the loss and the logs). With ``noise_scale`` sigma_u != 1 the analytic KL adds
0.5 * (sigma_u^2 - 1 - log sigma_u^2) per latent, a constant without gradient, which is left out.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn as nn

from .base import SAEBase, working_precision
from .config import SAEOutput, VSAEConfig
from .kernels import SparsePattern, _relu_sq_penalty, _zero, topk_select


class VSAE(SAEBase):
    """Variational TopK SAE: ``mu = ReLU(x @ W_enc + b_enc)``, TopK on |z| keeping the sign.

    Init (authors' code; ``cfg.init = "vsae"``): W ~ N(0, 1) [d_sae, d_in], each latent's vector
    rescaled to norm 0.1, ``W_dec = W``, ``W_enc = W^T``, biases 0; learned mode: ``W_var`` Kaiming-uniform (a = 0.01,
    fan_in = d_in), ``b_var = log_var_init``. The decoder is unconstrained in training. Sampling
    (unit / learned) happens only in training mode (``model.train()``), from
    ``self.noise_generator``; in eval mode z = mu.
    """

    cfg: VSAEConfig

    def __init__(self, cfg: VSAEConfig):
        super().__init__(cfg)
        g = self._init_parameters()
        if cfg.var_mode == "learned":
            a = 0.01
            bound = math.sqrt(2.0 / (1 + a * a)) * math.sqrt(3.0 / cfg.d_in)
            wv = (torch.rand(cfg.d_sae, cfg.d_in, generator=g) * 2 - 1) * bound
            self.W_var = nn.Parameter(wv.t().contiguous())
            self.b_var = nn.Parameter(torch.full((cfg.d_sae,), float(cfg.log_var_init)))

    def pre_acts(self, x: torch.Tensor) -> torch.Tensor:
        """Dense mu = ReLU(x @ W_enc + b_enc) [..., d_sae] (the deterministic pre-TopK activations)."""
        x2 = x.reshape(-1, self.d_in)
        pre = self._dense_pre(x2, self.W_enc, self.b_enc, self._shift()).float()
        return pre.relu_().reshape(*x.shape[:-1], self.d_sae)

    def _log_var_n(self, lv_raw: torch.Tensor) -> torch.Tensor:
        """log sigma^2 in training units, clamped."""
        lo, hi = self.cfg.log_var_clamp
        off = 2.0 * math.log(self.cfg.act_scale)
        return (lv_raw - off).clamp(lo, hi) if off else lv_raw.clamp(lo, hi)

    def _run(self, x, compute_loss, kl_scale=1.0, tokens_since_fired=None) -> SAEOutput:
        # The no-grad part (dense scores, sampling, selection, dense KL and its derivative) frees its
        # [N, d_sae] tensors before the differentiable part runs on the selected latents only.
        cfg = self.cfg
        lead = x.shape[:-1]
        x2 = working_precision(x.reshape(-1, self.d_in))
        n = x2.shape[0]
        sample = self.training and cfg.var_mode != "fixed"
        want_grad = compute_loss and torch.is_grad_enabled() and cfg.kl_coeff * kl_scale > 0
        with torch.no_grad():
            pre, lv_pre, eps, sigma, score = self._scores(x2, sample, compute_loss)
            _, idx = topk_select(score, cfg.k)
            raw = self._vals_at(pre, idx)
            if not compute_loss:
                z_sel = raw.relu()
                if sample:
                    z_sel += self._noise_at(eps, sigma, idx)
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
            pens = self._dense_kl(pre, lv_pre, n, want_grad) if cfg.kl_scope == "all" else (None, None, None, None)
            del pre, lv_pre, eps, sigma
        return self._loss_terms(x2, lead, idx, idx_all, aux_idx, raw, lv_raw, eps_all, pens, dead, kl_scale)

    @torch.no_grad()
    def _scores(self, x2, sample: bool, compute_loss: bool):
        """Dense pre-activations, learned log-variance pre-activations, noise, and the TopK score |z|."""
        cfg = self.cfg
        s = cfg.act_scale
        learned = cfg.var_mode == "learned"
        lv_pre = eps = sigma = None
        pre = self._dense_pre(x2, self.W_enc, self.b_enc, self._shift(), slot="pre" if compute_loss else "pre_eval")
        if learned and (sample or compute_loss):
            lv_pre = self._dense_pre(x2, self.W_var, self.b_var, None, slot="lv_pre" if compute_loss else None)
        if not sample:
            return pre, lv_pre, None, None, pre  # z = mu = ReLU(pre) >= 0, so TopK(|z|) = TopK(pre)
        eps = torch.randn(pre.shape, generator=self.noise_generator)
        z = pre.float().relu()
        if learned:
            sigma = self._log_var_n(lv_pre.float()).mul_(0.5).exp_().mul_(s)
            z.addcmul_(sigma, eps)
        else:
            z.add_(eps, alpha=s * cfg.noise_scale)
        return pre, lv_pre, eps, sigma, z.abs_()

    def _noise_at(self, eps, sigma, ix):
        """The sampling noise (input units) at the selected positions ix."""
        e_ = eps.gather(1, ix)
        return e_.mul_(self.cfg.act_scale * self.cfg.noise_scale) if sigma is None else e_.mul_(sigma.gather(1, ix))

    @torch.no_grad()
    def _dense_kl(self, pre, lv_pre, n: int, want_grad: bool):
        """KL over all latents: its mu part (through W_enc) and variance part (through W_var), each
        with its elementwise derivative wrt the pre-activations when ``want_grad``."""
        cfg = self.cfg
        s = cfg.act_scale
        pen_v = dpen_v = None
        # 0.5 * sum min(relu(pre) / s, c)^2; derivative relu(pre) / s^2 below the clamp, else 0
        pen_mu, dpen_mu = _relu_sq_penalty(pre, cfg.kl_clamp * s, want_grad)
        pen_mu = pen_mu / (s * s * n)
        if cfg.var_mode == "learned":
            lvf = lv_pre.float()
            lvn = self._log_var_n(lvf)
            pen_v = 0.5 * (lvn.exp() - 1.0 - lvn).sum() / n
            if want_grad:
                lo, hi = cfg.log_var_clamp
                off = 2.0 * math.log(s)
                inside = (lvf > lo + off) & (lvf < hi + off)
                dpen_v = lvn.exp_().sub_(1.0).mul_(0.5).mul_(inside).to(lv_pre.dtype)
        return pen_mu, dpen_mu, pen_v, dpen_v

    def _loss_terms(self, x2, lead, idx, idx_all, aux_idx, raw, lv_raw, eps_all, pens, dead, kl_scale) -> SAEOutput:
        """The differentiable part: selected values (main k, then AuxK), decode, MSE, KL, AuxK."""
        cfg = self.cfg
        s, c, n = cfg.act_scale, cfg.kl_clamp, x2.shape[0]
        learned = cfg.var_mode == "learned"
        pen_mu, dpen_mu, pen_v, dpen_v = pens
        del pens
        pat = SparsePattern(idx, self.d_sae)
        pat_all = pat if aux_idx is None else SparsePattern(idx_all, self.d_sae)
        sel_pre, kl_mu = self._encoder_out(x2, self.W_enc, self.b_enc, self._shift(), pat_all, raw, pen_mu, dpen_mu,
                                           1.0 / (s * s * n))
        del dpen_mu
        mu_sel = sel_pre.relu()
        lv_n_sel = None
        kl_v = _zero()
        if learned:
            sel_lv, kl_v = self._encoder_out(x2, self.W_var, self.b_var, None, pat_all, lv_raw, pen_v, dpen_v, 1.0 / n)
            del dpen_v
            lv_n_sel = self._log_var_n(sel_lv)
        if eps_all is not None:
            sd = s * cfg.noise_scale if lv_n_sel is None else s * torch.exp(0.5 * lv_n_sel)  # sigma in input units
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

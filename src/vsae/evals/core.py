"""SAE Bench's *core* metrics, written from its definitions (``sae_bench/evals/core/main.py``).

Two passes, both on held-out evaluation data:

1. **Sparsity and reconstruction** on cached residual activations (no language model needed):
   L0, L1, per-latent density (fraction of tokens on which the latent is non-zero), fraction alive
   (density > 0), MSE, explained variance, cosine similarity, L2 norms and ratio, relative
   reconstruction bias, and the weight-based max-cosine statistics.
2. **Downstream** with full forward passes: the SAE reconstruction is spliced into the model at the
   hook (``lm.logits(tokens, replace=...)``) and compared with the clean run and with zero ablation:

   ``ce_loss_score = (CE_zero - CE_sae) / (CE_zero - CE_clean)`` and
   ``kl_div_score  = (KL_zero - KL_sae) / KL_zero`` (KL to the clean next-token distribution; KL_clean = 0),

   so a perfect reconstruction scores 1 and a zero reconstruction 0 on both.

Special tokens (BOS, EOS, PAD: ``lm.special_token_ids`` plus the tokenizer's) are handled as SAE
Bench does with ``exclude_special_tokens_from_reconstruction=True``: at those positions the residual
is left unchanged in the SAE run (the zero-ablation run zeroes every position), and they are dropped
from every metric. For CE the mask is that of the *input* token of each prediction, as in SAE Bench.

Explained variance. SAE Bench has used three formulas; all three are reported:

* ``explained_variance`` (the conventional one, and what SAE Bench's correction in PR #61 intends):
  ``1 - E||x - x_hat||^2 / sum_d Var(x_d)``, numerator and denominator averaged separately over all
  evaluation tokens, the variance taken about the per-dimension mean of the whole evaluation set.
* ``explained_variance_saebench``: the corrected formula *as SAE Bench 0.4-0.6 actually codes it*,
  whose total variance is ``E||x||^2 - (mean_{batch,d} E_batch[x_d^2])^2``, i.e. approximately the
  variance about zero (SAELens issue #659 / PR #665 diagnose the two slips). Computed per batch of
  ``batch_tokens`` tokens and averaged as SAE Bench averages its batches.
* ``explained_variance_legacy``: the per-token mean of ``1 - ||x - x_hat||^2 / ||x - mean_batch(x)||^2``
  (SAE Bench before PR #61; the SAE Bench paper's numbers), with batches of ``batch_tokens`` tokens.

MSE. SAE Bench's ``mse`` divides each token's summed squared error by the number of tokens in its
batch, which makes it depend on the batch size; we report the per-element mean squared error ``mse``
and the per-token summed squared error ``sse_per_token`` instead.

The paper's table shows a KL-divergence score of -1 for every SAE: SAE Bench writes NaN metrics as
-1 (``replace_nans_with_negative_one``), and its KL uses ``log(softmax)``, which gives NaN once a
probability underflows to zero in bfloat16. Here the KL uses ``log_softmax`` in float32.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from .common import d_sae_of, keep_mask, special_ids_of, to_sae


@dataclass(frozen=True)
class CoreConfig:
    """Settings of the core evaluation (SAE Bench defaults in brackets where they exist)."""

    #: evaluation tokens for the sparsity / variance metrics (None: every token of the cache)
    n_tokens: int | None = None
    #: tokens per batch: SAE Bench's batch of 16 prompts x 128 tokens [2048]; the legacy and
    #: SAE-Bench-coded explained variances and the relative reconstruction bias are per batch
    batch_tokens: int = 2048
    #: contexts for the CE-loss and KL scores (full forward passes) [200 x 16]
    n_ce_contexts: int = 64
    #: contexts per forward pass
    ce_batch_size: int = 8
    #: keep the residual unchanged at special-token positions in the SAE run [True in the paper]
    exclude_special_tokens: bool = True
    #: compute the (d_sae x d_sae) max-cosine statistics of encoder and decoder
    weight_metrics: bool = True

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class CoreResult(NamedTuple):
    #: one row per SAE: every scalar metric
    metrics: pd.DataFrame
    #: long table (sae, latent, density): the feature-density histogram data
    density: pd.DataFrame


# --------------------------------------------------------------------------------------------
# Pure metric functions (also used by the tests)
# --------------------------------------------------------------------------------------------


def explained_variance(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    """Conventional explained variance ``1 - E||x - x_hat||^2 / sum_d Var(x_d)`` over rows of ``x``."""
    x = x.double()
    r = (x - x_hat.double()).pow(2).sum(-1).mean()
    total = x.var(dim=0, unbiased=False).sum()
    return float(1 - r / total)


def explained_variance_legacy(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    """SAE Bench's legacy (pre-PR #61) explained variance: per-token ratio, then the mean."""
    x = x.double()
    r = (x - x_hat.double()).pow(2).sum(-1)
    t = (x - x.mean(0)).pow(2).sum(-1)
    return float((1 - r / t).mean())


def explained_variance_saebench(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    """SAE Bench's "corrected" explained variance as coded in 0.4-0.6 (one batch)."""
    x = x.double()
    mss = x.pow(2).sum(-1).mean()
    mad = x.pow(2).mean(0).mean()
    r = (x - x_hat.double()).pow(2).sum(-1).mean()
    return float(1 - r / (mss - mad**2))


def cosine_similarity(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """Per-row cosine similarity (0 where either vector is zero)."""
    x = x.double()
    x_hat = x_hat.double()
    num = (x * x_hat).sum(-1)
    den = x.norm(dim=-1) * x_hat.norm(dim=-1)
    return torch.where(den > 0, num / den.clamp_min(1e-30), torch.zeros_like(num))


def downstream_scores(ce_clean: float, ce_sae: float, ce_zero: float, kl_sae: float, kl_zero: float) -> dict:
    """The two normalised scores from the mean CE losses and KL divergences."""
    ce_den = ce_zero - ce_clean
    return {
        "ce_loss_score": float((ce_zero - ce_sae) / ce_den) if ce_den != 0 else float("nan"),
        "kl_div_score": float((kl_zero - kl_sae) / kl_zero) if kl_zero != 0 else float("nan"),
    }


def max_cosine_to_others(W: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """For each row of ``W`` [n, d], the largest cosine similarity with any *other* row."""
    Wn = F.normalize(W.float(), dim=-1)
    n = Wn.shape[0]
    out = torch.empty(n)
    for a in range(0, n, chunk):
        b = min(n, a + chunk)
        s = Wn[a:b] @ Wn.T
        s[torch.arange(b - a), torch.arange(a, b)] = float("-inf")
        out[a:b] = s.max(dim=1).values
    return out


# --------------------------------------------------------------------------------------------
# Data access
# --------------------------------------------------------------------------------------------


def _as_source(acts, tokens=None):
    """Return (n, get(a, b) -> FloatTensor, tokens array or None) for a cache or a tensor."""
    if hasattr(acts, "get") and hasattr(acts, "acts"):
        n = len(acts)
        toks = np.asarray(acts.tokens) if tokens is None and hasattr(acts, "tokens") else tokens
        return n, (lambda a, b: acts.get(np.arange(a, b)).float()), toks
    t = torch.as_tensor(np.asarray(acts)) if not isinstance(acts, torch.Tensor) else acts
    return t.shape[0], (lambda a, b: t[a:b].float()), (None if tokens is None else np.asarray(tokens))


def contexts_from_cache(cache, n_contexts: int) -> torch.Tensor:
    """Rebuild ``n_contexts`` token contexts ``[n, T]`` of one length from a cache's token stream.

    Uses the cache's ``contexts`` array when it has one, else ``ctx_index`` (and ``positions`` for
    the order inside a context); contexts whose length differs from the most common one (a shorter
    last chunk) are skipped.
    """
    if getattr(cache, "contexts", None) is not None:
        return torch.as_tensor(np.asarray(cache.contexts[:n_contexts], dtype=np.int64))
    ctx = np.asarray(cache.ctx_index)
    toks = np.asarray(cache.tokens)
    pos = np.asarray(cache.positions) if hasattr(cache, "positions") else None
    # contexts are contiguous runs in the harvest order
    starts = np.flatnonzero(np.r_[True, ctx[1:] != ctx[:-1]])
    ends = np.r_[starts[1:], len(ctx)]
    lens = ends - starts
    if len(lens) == 0:
        raise ValueError("the cache holds no contexts")
    vals, counts = np.unique(lens, return_counts=True)
    T = int(vals[np.argmax(counts)])
    out = []
    for s, e in zip(starts, ends):
        if e - s != T:
            continue
        seg = toks[s:e]
        if pos is not None:
            seg = seg[np.argsort(pos[s:e], kind="stable")]
        out.append(seg.astype(np.int64))
        if len(out) >= n_contexts:
            break
    return torch.as_tensor(np.stack(out))


# --------------------------------------------------------------------------------------------
# Sparsity and reconstruction
# --------------------------------------------------------------------------------------------


class _Acc:
    def __init__(self, d_in: int, d_sae: int):
        z = lambda *s: torch.zeros(*s, dtype=torch.float64)  # noqa: E731
        self.n = 0
        self.sse = 0.0
        self.sum_x = z(d_in)
        self.sum_x2 = z(d_in)
        self.sum_norm2 = 0.0
        self.ev_legacy = 0.0
        self.cos = 0.0
        self.l2_in = 0.0
        self.l2_out = 0.0
        self.l2_ratio = 0.0
        self.l0 = 0.0
        self.l1 = 0.0
        self.fires = torch.zeros(d_sae, dtype=torch.int64)
        # per-batch quantities, averaged over batches as SAE Bench does
        self.b_mss: list[float] = []
        self.b_mad: list[float] = []
        self.b_sse: list[float] = []
        self.b_relbias: list[float] = []

    def update(self, x: torch.Tensor, x_hat: torch.Tensor, f: torch.Tensor):
        x = x.double()
        x_hat = x_hat.double()
        n = x.shape[0]
        if n == 0:
            return
        r2 = (x - x_hat).pow(2).sum(-1)
        self.n += n
        self.sse += float(r2.sum())
        self.sum_x += x.sum(0)
        self.sum_x2 += x.pow(2).sum(0)
        self.sum_norm2 += float(x.pow(2).sum())
        t = (x - x.mean(0)).pow(2).sum(-1)
        self.ev_legacy += float(torch.where(t > 0, 1 - r2 / t.clamp_min(1e-30), torch.zeros_like(t)).sum())
        self.cos += float(cosine_similarity(x, x_hat).sum())
        nin = x.norm(dim=-1)
        nout = x_hat.norm(dim=-1)
        self.l2_in += float(nin.sum())
        self.l2_out += float(nout.sum())
        self.l2_ratio += float((nout / torch.where(nin.abs() < 1e-4, torch.ones_like(nin), nin)).sum())
        nz = f != 0
        self.l0 += float(nz.sum())
        self.l1 += float(f.double().sum())
        self.fires += nz.sum(0)
        self.b_mss.append(float(x.pow(2).sum(-1).mean()))
        self.b_mad.append(float(x.pow(2).mean(0).mean()))
        self.b_sse.append(float(r2.mean()))
        dot = (x * x_hat).sum(-1).mean()
        self.b_relbias.append(float(x_hat.pow(2).sum(-1).mean() / dot) if dot != 0 else float("nan"))

    def result(self) -> tuple[dict, np.ndarray]:
        n = max(self.n, 1)
        d_in = self.sum_x.shape[0]
        mean = self.sum_x / n
        total_var = float((self.sum_x2 / n - mean.pow(2)).sum())
        sse_tok = self.sse / n
        density = (self.fires.double() / n).numpy()
        mss = float(np.mean(self.b_mss))
        mad = float(np.mean(self.b_mad))
        m = {
            "n_tokens": int(self.n),
            "l0": self.l0 / n,
            "l1": self.l1 / n,
            "mse": sse_tok / d_in,
            "sse_per_token": sse_tok,
            "explained_variance": 1 - sse_tok / total_var if total_var > 0 else float("nan"),
            "explained_variance_legacy": self.ev_legacy / n,
            "explained_variance_saebench": 1 - float(np.mean(self.b_sse)) / (mss - mad**2),
            "cossim": self.cos / n,
            "l2_norm_in": self.l2_in / n,
            "l2_norm_out": self.l2_out / n,
            "l2_ratio": self.l2_ratio / n,
            "relative_reconstruction_bias": (float(np.nanmean(self.b_relbias))
                                             if np.isfinite(self.b_relbias).any() else float("nan")),
            "frac_alive": float((density > 0).mean()),
            "n_alive": int((density > 0).sum()),
            "freq_over_1_percent": float((density > 0.01).mean()),
            "freq_over_10_percent": float((density > 0.1).mean()),
        }
        return m, density


@torch.no_grad()
def sparsity_and_reconstruction(
    saes: dict[str, Any],
    acts,
    *,
    tokens=None,
    special_ids=(),
    n_tokens: int | None = None,
    batch_tokens: int = 2048,
) -> tuple[dict[str, dict], dict[str, np.ndarray]]:
    """One pass over the evaluation activations for all SAEs; per-SAE metrics and densities.

    ``acts`` is an ``ActivationCache`` (its ``tokens`` give the special-token mask) or a tensor
    ``[N, d_in]`` (pass ``tokens=`` to mask special tokens).
    """
    n, get, toks = _as_source(acts, tokens)
    if n_tokens is not None:
        n = min(n, int(n_tokens))
    accs = {}
    for a in range(0, n, batch_tokens):
        b = min(n, a + batch_tokens)
        x = get(a, b)
        if toks is not None and len(special_ids):
            x = x[keep_mask(toks[a:b], special_ids)]
        if x.shape[0] == 0:
            continue
        for name, sae in saes.items():
            if name not in accs:
                accs[name] = _Acc(x.shape[1], d_sae_of(sae))
            xs = to_sae(sae, x)
            f = sae.encode(xs)
            x_hat = sae.decode(f)
            accs[name].update(x, x_hat.float().cpu(), f.float().cpu())
    metrics, dens = {}, {}
    for name, acc in accs.items():
        metrics[name], dens[name] = acc.result()
    return metrics, dens


# --------------------------------------------------------------------------------------------
# Downstream: CE loss and KL divergence with the reconstruction spliced in
# --------------------------------------------------------------------------------------------


def _ce_per_token(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    lp = F.log_softmax(logits[:, :-1].float(), dim=-1)
    return -lp.gather(-1, tokens[:, 1:, None].to(lp.device)).squeeze(-1).cpu()


def _kl_per_token(clean_logp: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    lp = F.log_softmax(logits.float(), dim=-1)
    return (clean_logp.exp() * (clean_logp - lp)).sum(-1).cpu()


@torch.no_grad()
def downstream_metrics(
    saes: dict[str, Any],
    lm,
    contexts: torch.Tensor,
    *,
    special_ids=None,
    batch_size: int = 8,
    exclude_special_tokens: bool = True,
) -> dict[str, dict]:
    """CE loss and KL divergence of the clean, SAE-spliced and zero-ablated model, per SAE.

    The clean and zero-ablation runs are shared by all SAEs (one forward each per batch).
    """
    if special_ids is None:
        special_ids = special_ids_of(lm)
    contexts = torch.as_tensor(contexts).long()
    sums = {"ce_clean": 0.0, "ce_zero": 0.0, "kl_zero": 0.0}
    per = {name: {"ce_sae": 0.0, "kl_sae": 0.0} for name in saes}
    n_ce = n_kl = 0
    for i in range(0, len(contexts), batch_size):
        tok = contexts[i : i + batch_size]
        metric_mask = keep_mask(tok, special_ids)
        splice_mask = metric_mask if exclude_special_tokens else torch.ones_like(metric_mask)
        ce_mask = metric_mask[:, :-1]

        clean = lm.logits(tok)
        clean_logp = F.log_softmax(clean.float(), dim=-1)
        ce_clean = _ce_per_token(clean, tok)
        del clean
        zero = lm.logits(tok, replace=lambda r: torch.zeros_like(r))
        ce_zero = _ce_per_token(zero, tok)
        kl_zero = _kl_per_token(clean_logp, zero)
        del zero
        sums["ce_clean"] += float(ce_clean[ce_mask].double().sum())
        sums["ce_zero"] += float(ce_zero[ce_mask].double().sum())
        sums["kl_zero"] += float(kl_zero[metric_mask].double().sum())
        n_ce += int(ce_mask.sum())
        n_kl += int(metric_mask.sum())
        for name, sae in saes.items():

            def splice(resid, sae=sae, m=splice_mask):
                x = to_sae(sae, resid)
                x_hat = sae.decode(sae.encode(x)).to(device=resid.device, dtype=resid.dtype)
                return torch.where(m.to(resid.device)[..., None], x_hat, resid)

            logits = lm.logits(tok, replace=splice)
            per[name]["ce_sae"] += float(_ce_per_token(logits, tok)[ce_mask].double().sum())
            per[name]["kl_sae"] += float(_kl_per_token(clean_logp, logits)[metric_mask].double().sum())
            del logits
    out = {}
    for name in saes:
        ce_clean = sums["ce_clean"] / max(n_ce, 1)
        ce_zero = sums["ce_zero"] / max(n_ce, 1)
        kl_zero = sums["kl_zero"] / max(n_kl, 1)
        ce_sae = per[name]["ce_sae"] / max(n_ce, 1)
        kl_sae = per[name]["kl_sae"] / max(n_kl, 1)
        out[name] = {
            "ce_loss_without_sae": ce_clean,
            "ce_loss_with_sae": ce_sae,
            "ce_loss_with_ablation": ce_zero,
            "kl_div_with_sae": kl_sae,
            "kl_div_with_ablation": kl_zero,
            **downstream_scores(ce_clean, ce_sae, ce_zero, kl_sae, kl_zero),
            "n_ce_tokens": n_ce,
            "n_ce_contexts": int(len(contexts)),
        }
    return out


# --------------------------------------------------------------------------------------------
# Everything
# --------------------------------------------------------------------------------------------


def evaluate_core(
    saes: dict[str, Any],
    acts,
    lm=None,
    *,
    contexts: torch.Tensor | None = None,
    tokens=None,
    cfg: CoreConfig = CoreConfig(),
) -> CoreResult:
    """The core evaluation of several SAEs on held-out data.

    Args:
        saes: name -> SAE (running on raw activations).
        acts: the evaluation ``ActivationCache`` (or a tensor ``[N, d_in]``).
        lm: the ``LanguageModel``; without it the downstream scores are NaN.
        contexts: token contexts ``[n, T]`` for CE/KL; default: rebuilt from the cache.
        tokens: token ids aligned with a tensor ``acts`` (for the special-token mask).
    Returns:
        ``CoreResult(metrics, density)``: one row per SAE, and the long density table.
    """
    special = special_ids_of(lm) if lm is not None else []
    m, dens = sparsity_and_reconstruction(
        saes, acts, tokens=tokens, special_ids=special, n_tokens=cfg.n_tokens, batch_tokens=cfg.batch_tokens
    )
    down: dict[str, dict] = {}
    if lm is not None and cfg.n_ce_contexts > 0:
        if contexts is None:
            contexts = contexts_from_cache(acts, cfg.n_ce_contexts)
        contexts = torch.as_tensor(contexts)[: cfg.n_ce_contexts]
        down = downstream_metrics(
            saes, lm, contexts, special_ids=special, batch_size=cfg.ce_batch_size,
            exclude_special_tokens=cfg.exclude_special_tokens,
        )
    rows, dens_rows = [], []
    for name, sae in saes.items():
        row = {"sae": name, "d_sae": d_sae_of(sae), "k": getattr(getattr(sae, "cfg", None), "k", None)}
        row.update(m.get(name, {}))
        row.update(down.get(name, {
            k: float("nan") for k in ("ce_loss_without_sae", "ce_loss_with_sae", "ce_loss_with_ablation",
                                      "kl_div_with_sae", "kl_div_with_ablation", "ce_loss_score", "kl_div_score")
        }))
        if cfg.weight_metrics:
            row["average_max_decoder_cosine_sim"] = float(max_cosine_to_others(sae.W_dec.detach().cpu()).mean())
            row["average_max_encoder_cosine_sim"] = float(max_cosine_to_others(sae.W_enc.detach().cpu().T).mean())
        rows.append(row)
        d = dens.get(name)
        if d is not None:
            dens_rows.append(pd.DataFrame({"sae": name, "latent": np.arange(len(d)), "density": d}))
    density = pd.concat(dens_rows, ignore_index=True) if dens_rows else pd.DataFrame(columns=["sae", "latent", "density"])
    return CoreResult(pd.DataFrame(rows), density)

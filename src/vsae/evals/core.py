"""SAE Bench's *core* metrics, written from its definitions (``sae_bench/evals/core/main.py``).

Two passes, both on held-out evaluation data:

1. **Sparsity and reconstruction** on cached residual activations (no language model needed):
   L0, L1, per-latent density (fraction of tokens on which the latent is non-zero), fraction alive
   (density > 0), MSE, explained variance, cosine similarity, L2 norms and ratio, relative
   reconstruction bias, and the weight-based max-cosine statistics.
2. **Downstream** (:mod:`vsae.evals.downstream`) with forward passes: the SAE reconstruction is spliced into the model at the
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
# the downstream pass lives in its own module; its functions are part of the core evaluation's API
from .downstream import CleanRuns, bootstrap_downstream, contexts_from_cache, downstream_metrics, downstream_scores  # noqa: F401


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
    #: bootstrap replicates for the evaluation-noise table (0: none)
    n_boot: int = 1000

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class CoreResult(NamedTuple):
    #: one row per SAE: every scalar metric
    metrics: pd.DataFrame
    #: long table (sae, latent, density, first_fire): the feature-density histogram data, and the
    #: index of the first evaluation token on which each latent fires (-1: never), for
    #: :func:`alive_curve`
    density: pd.DataFrame
    #: evaluation noise, one row per (sae, metric): bootstrap standard error and 95% half-width over
    #: blocks of evaluation tokens (reconstruction metrics) or over CE contexts (CE / KL scores)
    noise: pd.DataFrame = pd.DataFrame(columns=["sae", "source", "metric", "boot_se", "boot_half", "n_blocks", "n_boot"])


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
    return _cosine_from((x * x_hat).sum(-1), x.norm(dim=-1), x_hat.norm(dim=-1))


def _cosine_from(num: torch.Tensor, n_x: torch.Tensor, n_y: torch.Tensor) -> torch.Tensor:
    """Per-row cosine from the dot products and the two norms (0 where either norm is zero)."""
    den = n_x * n_y
    return torch.where(den > 0, num / den.clamp_min(1e-30), torch.zeros_like(num))


def top_cosines_to_others(W: torch.Tensor, k: int, chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """For each row of ``W`` [n, d], the ``k`` largest cosine similarities with the *other* rows and
    their row indices (``[n, k]`` each, by decreasing cosine), ``chunk`` rows at a time (never the
    full ``n x n`` matrix). ``k`` must be at most ``n - 1``."""
    Wn = F.normalize(W.detach().float().cpu(), dim=-1)
    n = Wn.shape[0]
    vals, idx = torch.empty(n, k), torch.empty(n, k, dtype=torch.long)
    for a in range(0, n, chunk):
        b = min(n, a + chunk)
        s = Wn[a:b] @ Wn.T
        s[torch.arange(b - a), torch.arange(a, b)] = float("-inf")
        vals[a:b], idx[a:b] = s.topk(k, dim=1)
    return vals, idx


def max_cosine_to_others(W: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """For each row of ``W`` [n, d], the largest cosine similarity with any *other* row."""
    return top_cosines_to_others(W, 1, chunk)[0][:, 0]


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


def alive_curve(first_fire: np.ndarray, n_tokens: int, points: int = 24) -> pd.DataFrame:
    """Fraction of latents alive (fired at least once) within the first ``t`` evaluation tokens, for
    ``points`` log-spaced ``t`` up to ``n_tokens``: whether the alive count has saturated.

    ``first_fire``: per latent, the index of its first firing token (-1: never), as
    :func:`sparsity_and_reconstruction` records it.
    """
    ff = np.asarray(first_fire)
    fired = np.sort(ff[ff >= 0])
    ts = np.unique(np.geomspace(1, max(int(n_tokens), 1), points).astype(int))
    alive = np.searchsorted(fired, ts, side="left") / max(len(ff), 1)
    return pd.DataFrame({"tokens": ts, "frac_alive": alive})


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
        #: index (in evaluation-token order) of the first token on which each latent fires; -1: never
        self.first_fire = torch.full((d_sae,), -1, dtype=torch.int64)
        #: per-batch sums for the block bootstrap of the reconstruction metrics
        self.b_n: list[int] = []
        self.b_sum_x: list[torch.Tensor] = []
        self.b_sum_x2: list[torch.Tensor] = []
        self.b_cos: list[float] = []
        # per-batch quantities, averaged over batches as SAE Bench does
        self.b_mss: list[float] = []
        self.b_mad: list[float] = []
        self.b_sse: list[float] = []
        self.b_relbias: list[float] = []

    def update(self, x: torch.Tensor, x_hat: torch.Tensor, f: torch.Tensor | None = None, *,
               values: torch.Tensor | None = None, indices: torch.Tensor | None = None):
        """Add one batch: inputs ``x`` [n, d_in], reconstructions ``x_hat`` and the codes, either dense
        ``f`` [n, d_sae] or sparse ``values`` / ``indices`` [n, k] (the same counts, exactly; the L1
        sum in another order). The sparse form skips every pass over the dense [n, d_sae] codes."""
        # Each intermediate computed once and reused (x*x is bitwise x.pow(2): ATen squares by
        # multiplying). Every sum below is the same reduction of the same values as in the plain
        # formulas, so the metrics are bit for bit those of computing each one separately
        # (tests/test_eval_core_bitwise.py keeps that reference); fewer [n, d_in] temporaries.
        x = x.double()
        x_hat = x_hat.double()
        n = x.shape[0]
        if n == 0:
            return
        buf = x - x_hat
        r2 = buf.mul_(buf).sum(-1)
        if f is not None:
            nz = f != 0
            new = (self.first_fire < 0) & nz.any(0)
            if bool(new.any()):
                self.first_fire[new] = self.n + nz[:, new].to(torch.int8).argmax(0)
            l0, l1, fires = float(nz.sum()), float(f.double().sum()), nz.sum(0)
        else:
            k = indices.shape[-1]
            pos = (values != 0).view(-1).nonzero().squeeze(1)  # row-major, as boolean indexing
            lat = indices.reshape(-1)[pos]
            rows = torch.div(pos, k, rounding_mode="floor")
            fires = torch.bincount(lat, minlength=self.fires.shape[0])
            first = torch.full_like(self.first_fire, n).scatter_reduce_(0, lat, rows, "amin")
            new = (self.first_fire < 0) & (first < n)
            self.first_fire[new] = self.n + first[new]
            l0, l1 = float(pos.numel()), float(values.double().sum())
        sx = x.sum(0)
        x2 = x * x
        sx2 = x2.sum(0)
        self.n += n
        self.sse += float(r2.sum())
        self.sum_x += sx
        self.sum_x2 += sx2
        self.sum_norm2 += float(x2.sum())
        torch.sub(x, x.mean(0), out=buf)
        t = buf.mul_(buf).sum(-1)
        self.ev_legacy += float(torch.where(t > 0, 1 - r2 / t.clamp_min(1e-30), torch.zeros_like(t)).sum())
        # cosine_similarity(x, x_hat), with the norms it shares with the L2 ratio
        nin = x.norm(dim=-1)
        nout = x_hat.norm(dim=-1)
        num = torch.mul(x, x_hat, out=buf).sum(-1)
        cos = float(_cosine_from(num, nin, nout).sum())
        self.cos += cos
        self.b_n.append(n)
        self.b_sum_x.append(sx)
        self.b_sum_x2.append(sx2)
        self.b_cos.append(cos)
        self.l2_in += float(nin.sum())
        self.l2_out += float(nout.sum())
        self.l2_ratio += float((nout / torch.where(nin.abs() < 1e-4, torch.ones_like(nin), nin)).sum())
        self.l0 += l0
        self.l1 += l1
        self.fires += fires
        self.b_mss.append(float(x2.sum(-1).mean()))
        self.b_mad.append(float(x2.mean(0).mean()))
        self.b_sse.append(float(r2.mean()))
        dot = num.mean()
        self.b_relbias.append(float(torch.mul(x_hat, x_hat, out=buf).sum(-1).mean() / dot) if dot != 0 else float("nan"))

    def bootstrap(self, n_boot: int = 1000, seed: int = 0, confidence: float = 0.95) -> list[dict]:
        """Evaluation noise of explained variance (both formulas) and cosine similarity: a block
        bootstrap that redraws whole batches (contiguous runs of contexts) with replacement and
        recomputes each metric with the point estimate's own aggregation."""
        nb = len(self.b_n)
        if nb < 2:
            return []
        rng = np.random.default_rng(seed)
        draws = rng.integers(0, nb, size=(n_boot, nb))
        cnt = np.stack([np.bincount(d, minlength=nb) for d in draws]).astype(np.float64)  # [n_boot, nb]
        n = cnt @ np.asarray(self.b_n, np.float64)
        sse = cnt @ (np.asarray(self.b_sse) * np.asarray(self.b_n))
        sx = cnt @ torch.stack(self.b_sum_x).numpy()
        sx2 = cnt @ torch.stack(self.b_sum_x2).numpy()
        total_var = (sx2 / n[:, None] - (sx / n[:, None]) ** 2).sum(1)
        w = cnt / cnt.sum(1, keepdims=True)  # SAE Bench's formula: a mean over batches
        mss, mad, bsse = w @ np.asarray(self.b_mss), w @ np.asarray(self.b_mad), w @ np.asarray(self.b_sse)
        vals = {"explained_variance": 1 - (sse / n) / total_var,
                "explained_variance_saebench": 1 - bsse / (mss - mad ** 2),
                "cossim": (cnt @ np.asarray(self.b_cos)) / n}
        lo_q, hi_q = 50 * (1 - confidence), 50 * (1 + confidence)
        out = []
        for metric, v in vals.items():
            lo, hi = np.percentile(v, [lo_q, hi_q])
            out.append({"metric": metric, "boot_se": float(v.std(ddof=1)), "boot_half": float((hi - lo) / 2),
                        "n_blocks": nb, "n_boot": int(n_boot)})
        return out

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
    extras: dict | None = None,
    n_boot: int = 1000,
) -> tuple[dict[str, dict], dict[str, np.ndarray]]:
    """One pass over the evaluation activations for all SAEs; per-SAE metrics and densities.

    ``acts`` is an ``ActivationCache`` (its ``tokens`` give the special-token mask) or a tensor
    ``[N, d_in]`` (pass ``tokens=`` to mask special tokens). Pass a dict as ``extras`` to receive
    ``extras["first_fire"][name]`` (the index of the first evaluation token on which each latent
    fires, -1 if never: the alive-vs-tokens curve) and ``extras["bootstrap"][name]`` (block-bootstrap
    noise of the reconstruction metrics, ``n_boot`` replicates).
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
            if hasattr(sae, "encode_topk") and hasattr(sae, "decode_topk"):  # sparse: no dense codes
                vals, idx = sae.encode_topk(xs)
                x_hat = sae.decode_topk(vals, idx)
                accs[name].update(x, x_hat.float().cpu(), values=vals.float().cpu(), indices=idx.cpu())
            else:
                f = sae.encode(xs)
                x_hat = sae.decode(f)
                accs[name].update(x, x_hat.float().cpu(), f.float().cpu())
    metrics, dens = {}, {}
    for name, acc in accs.items():
        metrics[name], dens[name] = acc.result()
    if extras is not None:
        extras["first_fire"] = {name: acc.first_fire.numpy() for name, acc in accs.items()}
        extras["bootstrap"] = {name: acc.bootstrap(n_boot) for name, acc in accs.items()} if n_boot else {}
    return metrics, dens


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
    clean_runs=None,
) -> CoreResult:
    """The core evaluation of several SAEs on held-out data.

    Args:
        saes: name -> SAE (running on raw activations).
        acts: the evaluation ``ActivationCache`` (or a tensor ``[N, d_in]``).
        lm: the ``LanguageModel``; without it the downstream scores are NaN.
        contexts: token contexts ``[n, T]`` for CE/KL; default: rebuilt from the cache.
        tokens: token ids aligned with a tensor ``acts`` (for the special-token mask).
        clean_runs: a :class:`~vsae.evals.downstream.CleanRuns` that stores the CE/KL pass's clean and
            zero-ablated runs for later calls on the same contexts (the same scores, bit for bit).
    Returns:
        ``CoreResult(metrics, density)``: one row per SAE, and the long density table.
    """
    special = special_ids_of(lm) if lm is not None else []
    extras: dict = {}
    m, dens = sparsity_and_reconstruction(
        saes, acts, tokens=tokens, special_ids=special, n_tokens=cfg.n_tokens, batch_tokens=cfg.batch_tokens,
        extras=extras, n_boot=cfg.n_boot,
    )
    per_context: list = []
    down: dict[str, dict] = {}
    if lm is not None and cfg.n_ce_contexts > 0:
        if contexts is None:
            contexts = contexts_from_cache(acts, cfg.n_ce_contexts)
        contexts = torch.as_tensor(contexts)[: cfg.n_ce_contexts]
        down = downstream_metrics(
            saes, lm, contexts, special_ids=special, batch_size=cfg.ce_batch_size,
            exclude_special_tokens=cfg.exclude_special_tokens, per_context=per_context, clean_runs=clean_runs,
        )
    rows, dens_rows, noise = [], [], []
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
            dens_rows.append(pd.DataFrame({"sae": name, "latent": np.arange(len(d)), "density": d,
                                           "first_fire": extras["first_fire"][name]}))
        noise += [{"sae": name, "source": "eval tokens (batch blocks)", **r} for r in extras.get("bootstrap", {}).get(name, [])]
    density = (pd.concat(dens_rows, ignore_index=True) if dens_rows
               else pd.DataFrame(columns=["sae", "latent", "density", "first_fire"]))
    if per_context and cfg.n_boot:
        b = bootstrap_downstream(pd.DataFrame(per_context), n_boot=cfg.n_boot)
        noise += [{"source": "CE contexts", **r} for r in b.rename(columns={"n_contexts": "n_blocks"}).to_dict("records")]
    noise_df = pd.DataFrame(noise, columns=["sae", "source", "metric", "boot_se", "boot_half", "n_blocks", "n_boot"])
    return CoreResult(pd.DataFrame(rows), density, noise_df)


def noise_vs_seeds(metrics: pd.DataFrame, noise: pd.DataFrame, by: str = "run",
                   scores: tuple[str, ...] = ("explained_variance", "explained_variance_saebench", "cossim",
                                              "ce_loss_score", "kl_div_score")) -> pd.DataFrame:
    """Evaluation noise beside seed noise, one row per (group ``by``, score).

    ``metrics``: one row per SAE (columns ``sae``, ``by``, the scores); ``noise``: the ``noise`` table
    of :func:`evaluate_core`. ``seed_half``: the 95% t-interval half-width over the group's seeds;
    ``eval_half``: the mean over its SAEs of the bootstrap half-width; ``ratio = eval_half / seed_half``.
    """
    from ..stats import t_interval

    rows = []
    nz = noise.set_index(["sae", "metric"])["boot_half"]
    for key, g in metrics.groupby(by, sort=False):
        for m in scores:
            if m not in g.columns:
                continue
            _, seed_half, n = t_interval(g[m])
            ev = [nz.get((s, m), np.nan) for s in g["sae"]]
            eval_half = float(np.nanmean(ev)) if np.isfinite(ev).any() else float("nan")
            rows.append({by: key, "metric": m, "seed_half": seed_half, "eval_half": eval_half,
                         "ratio": eval_half / seed_half if seed_half and np.isfinite(seed_half) else float("nan"),
                         "n_seeds": n})
    return pd.DataFrame(rows)


def saturation(curve: pd.DataFrame) -> float:
    """Relative growth of the alive count over the last doubling of evaluation tokens (0: saturated).

    ``curve``: :func:`alive_curve`'s table. ``(alive(T) - alive(T/2)) / alive(T)`` with ``alive(T/2)``
    interpolated on the log-token axis.
    """
    t, a = curve["tokens"].to_numpy(float), curve["frac_alive"].to_numpy(float)
    if len(t) < 2 or a[-1] <= 0:
        return float("nan")
    half = np.interp(np.log(t[-1] / 2), np.log(t), a)
    return float((a[-1] - half) / a[-1])


def alive_curves(metrics: pd.DataFrame, density: pd.DataFrame, label: str = "run", seed: int | None = None,
                 points: int = 24) -> dict[str, pd.DataFrame]:
    """:func:`alive_curve` of every SAE in ``metrics`` (of one ``seed`` when given), keyed by its
    ``label`` column; ``density`` is the core eval's long table with ``first_fire``."""
    m = metrics if seed is None else metrics[metrics["seed"] == seed]
    m = m.set_index("sae")
    ff = {s: g["first_fire"].to_numpy() for s, g in density.groupby("sae", sort=False)}
    return {m.loc[s, label]: alive_curve(ff[s], int(m.loc[s, "n_tokens"]), points) for s in m.index if s in ff}

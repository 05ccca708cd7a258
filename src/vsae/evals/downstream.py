"""SAE Bench's downstream reconstruction metrics: the CE loss and KL divergence of the LM with the SAE
spliced in at the hook, against the clean run and zero ablation (``sae_bench/evals/core/main.py``).

``ce_loss_score = (CE_zero - CE_sae) / (CE_zero - CE_clean)`` and
``kl_div_score  = (KL_zero - KL_sae) / KL_zero`` (KL to the clean next-token distribution), token-weighted
means over the evaluation contexts; special tokens are handled as :mod:`vsae.evals.core` describes.
:func:`bootstrap_downstream` measures their evaluation noise by resampling contexts.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from .common import keep_mask, special_ids_of, to_sae

def downstream_scores(ce_clean: float, ce_sae: float, ce_zero: float, kl_sae: float, kl_zero: float) -> dict:
    """The two normalised scores from the mean CE losses and KL divergences."""
    ce_den = ce_zero - ce_clean
    return {
        "ce_loss_score": float((ce_zero - ce_sae) / ce_den) if ce_den != 0 else float("nan"),
        "kl_div_score": float((kl_zero - kl_sae) / kl_zero) if kl_zero != 0 else float("nan"),
    }


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


def _ce_per_token(logp: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy ``[B, T-1]`` from log-probabilities ``[B, T, V]``."""
    return -logp[:, :-1].gather(-1, tokens[:, 1:, None].to(logp.device)).squeeze(-1).cpu()


def _kl_per_token(clean_p: torch.Tensor, clean_logp: torch.Tensor, logp: torch.Tensor, *,
                  consume: bool = False) -> torch.Tensor:
    """KL(clean || run) per position ``[B, T]``; ``clean_p = clean_logp.exp()``, computed once per batch.

    ``consume=True`` overwrites ``logp`` with the pointwise terms instead of allocating two
    [B, T, V] temporaries (at the book's shapes 2 x 200 MB, fresh pages each time: 104 -> 38 ms);
    the same products and the same row sums, bit for bit.
    """
    if not consume:
        return (clean_p * (clean_logp - logp)).sum(-1).cpu()
    return torch.sub(clean_logp, logp, out=logp).mul_(clean_p).sum(-1).cpu()


def _logp(logits: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """One float32 log-softmax per run, shared by its CE and its KL (row-wise, so the values are those
    of a log-softmax of ``logits[:, :-1]`` alone, bit for bit).

    With ``out`` (a float32 buffer of the logits' shape, reused across the runs of a batch) the
    same kernel writes there instead of into fresh memory (at the book's shapes 58 -> 26 ms).
    """
    logits = logits.float()
    if out is not None and out.shape == logits.shape and out.device == logits.device:
        return torch.ops.aten._log_softmax.out(logits, -1, False, out=out)
    return F.log_softmax(logits, dim=-1)


def _forward_fns(lm):
    """``(clean(tok) -> (logits, resid), spliced(tok, resid, new_resid) -> logits)`` for an LM.

    With :meth:`vsae.lm.LanguageModel.logits_from_resid` the clean residual at the hook is computed
    once per batch and every spliced pass runs only the blocks after the hook (bit-identical to the
    full forward with the residual replaced; ``tests/test_eval_core.py`` checks it); LM stand-ins
    without it fall back to full forward passes with ``replace=``.
    """
    if hasattr(lm, "logits_from_resid") and hasattr(lm, "resid") and getattr(lm, "can_start_after_hook", True):
        def clean(tok):
            r = lm.resid(tok)
            return lm.logits_from_resid(r), r

        def spliced(tok, resid, new):
            return lm.logits_from_resid(new)
        return clean, spliced

    def clean_full(tok):
        cap = {}

        def grab(r):
            cap["r"] = r
            return r
        logits = lm.logits(tok, replace=grab)
        return logits, cap["r"]

    def spliced_full(tok, resid, new):
        return lm.logits(tok, replace=lambda r: new.to(device=r.device, dtype=r.dtype))
    return clean_full, spliced_full


def _clean_and_zero(clean_fn, spliced_fn, tok) -> dict[str, torch.Tensor]:
    """One batch's runs that do not depend on the SAEs: the clean residual at the hook ``resid``,
    the clean log-probabilities ``clean_logp`` [B, T, V], and per token the clean CE ``ce_clean``,
    the zero-ablated CE ``ce_zero`` [B, T-1] and its KL to the clean run ``kl_zero`` [B, T]."""
    clean, resid = clean_fn(tok)
    clean_logp = _logp(clean)
    del clean
    ce_clean = _ce_per_token(clean_logp, tok)
    zero_logp = _logp(spliced_fn(tok, resid, torch.zeros_like(resid)))
    ce_zero = _ce_per_token(zero_logp, tok)
    kl_zero = _kl_per_token(clean_logp.exp(), clean_logp, zero_logp, consume=True)
    return {"resid": resid, "clean_logp": clean_logp, "ce_clean": ce_clean, "ce_zero": ce_zero, "kl_zero": kl_zero}


#: the largest set of clean runs :class:`CleanRuns` stores, in GB of clean log-probabilities
#: (``$VSAE_CLEAN_RUNS_MAX_GB``); larger sets (the paper profile's 3,200 contexts: ~80 GB) are recomputed
#: by every call, as before
CLEAN_RUNS_MAX_GB = 8.0


class CleanRuns:
    """The clean and zero-ablated runs of the CE/KL contexts, computed once and stored for every call.

    Every :func:`downstream_metrics` call on the same contexts runs the same two LM passes per batch
    before its SAEs' spliced passes: the clean forward (all blocks, for the clean log-probabilities
    and the residual at the hook) and the zero-ablated one. They depend on the LM, the contexts, the
    batching, the device and the thread count, not on the SAEs, so the first call writes each batch's
    results (:func:`_clean_and_zero`: the residual, the clean log-probabilities and the per-token CE
    and KL) to the store under that key and every later call, in any process, reads them back instead
    of recomputing them: the same tensors, bit for bit, so the same scores
    (``tests/test_eval_core_noise.py``). At the offline profile's 64 contexts that is 1.6 GB on disk
    and one 200 MB batch in memory at a time.

    ``CleanRuns(store, key)``: ``key`` is what identifies the LM's weights and settings (the pipeline
    passes ``lm.describe()`` and the device). A batch written by a killed call is kept in the
    artifact's staging folder and read back by the next call; the artifact is complete (and read
    without recomputing anything) once every batch is there.
    """

    kind = "clean_runs"

    def __init__(self, store, key: dict):
        self.store = store
        self.key = key

    def bind(self, lm, contexts: torch.Tensor, batch_size: int) -> _BoundCleanRuns | None:
        """The stored runs of these contexts in batches of ``batch_size`` (None if too large to store)."""
        contexts = torch.as_tensor(contexts).long()
        n, t = contexts.shape
        gb = n * t * int(getattr(lm, "d_vocab", 0) or 0) * 4 / 1e9
        if gb > float(os.environ.get("VSAE_CLEAN_RUNS_MAX_GB", CLEAN_RUNS_MAX_GB)):
            return None
        digest = hashlib.sha256(contexts.contiguous().numpy().tobytes()).hexdigest()
        cfg = {"lm": self.key, "contexts": digest, "shape": [n, t], "batch_size": int(batch_size),
               "threads": torch.get_num_threads(), "format": 1}
        n_batches = -(-n // batch_size)
        return _BoundCleanRuns(self.store, cfg, n_batches, getattr(lm, "device", "cpu"))


class _BoundCleanRuns:
    """One key's stored runs: ``read(b, tok)`` (None when batch ``b`` is not stored yet), ``write``, ``finish``."""

    _NAMES = ("resid", "clean_logp", "ce_clean", "ce_zero", "kl_zero")

    def __init__(self, store, cfg: dict, n_batches: int, device):
        self.store, self.cfg, self.n_batches, self.device = store, cfg, n_batches, device
        self.done = store.exists(CleanRuns.kind, cfg)
        self.folder = store.path(CleanRuns.kind, cfg) if self.done else store.staging_path(CleanRuns.kind, cfg)

    def _file(self, b: int) -> Path:
        return self.folder / f"batch_{b:05d}.safetensors"

    def read(self, b: int, tok: torch.Tensor) -> dict[str, torch.Tensor] | None:
        from safetensors.torch import load_file

        f = self._file(b)
        if not f.exists():
            if self.done:
                raise RuntimeError(f"the stored clean runs {self.folder} lack {f.name}; delete that folder "
                                   "and rerun (the clean and zero-ablated runs are recomputed)")
            return None
        try:
            t = load_file(str(f))
        except Exception as e:  # a truncated or damaged file
            raise RuntimeError(f"cannot read the stored clean runs {f} ({type(e).__name__}: {e}); delete "
                               f"{self.folder} and rerun (the clean and zero-ablated runs are recomputed)") from e
        if not torch.equal(t.get("tokens", torch.empty(0)), tok.cpu()) or any(k not in t for k in self._NAMES):
            raise RuntimeError(f"the stored clean runs {f} are not those of these contexts; delete "
                               f"{self.folder} and rerun (the clean and zero-ablated runs are recomputed)")
        # the residual and log-probabilities live where the LM runs, the per-token CE/KL on the CPU
        return {k: t[k].to(self.device) if k in ("resid", "clean_logp") else t[k] for k in self._NAMES}

    def write(self, b: int, tok: torch.Tensor, shared: dict[str, torch.Tensor]) -> None:
        from safetensors.torch import save

        from ..files import atomic_write

        self.folder.mkdir(parents=True, exist_ok=True)
        tensors = {k: shared[k].detach().cpu().contiguous() for k in self._NAMES}
        tensors["tokens"] = tok.cpu().contiguous()
        atomic_write(self._file(b), save(tensors))

    def finish(self) -> None:
        """Turn a staging folder holding every batch into the artifact."""
        if self.done or not all(self._file(b).exists() for b in range(self.n_batches)):
            return
        import json

        (self.folder / "config.json").write_text(json.dumps(self.cfg, indent=2, sort_keys=True))
        self.store.commit(CleanRuns.kind, self.cfg, self.folder)
        self.done = True


@torch.no_grad()
def downstream_metrics(
    saes: dict[str, Any],
    lm,
    contexts: torch.Tensor,
    *,
    special_ids=None,
    batch_size: int = 8,
    exclude_special_tokens: bool = True,
    per_context: list | None = None,
    clean_runs: CleanRuns | None = None,
) -> dict[str, dict]:
    """CE loss and KL divergence of the clean, SAE-spliced and zero-ablated model, per SAE.

    The clean and zero-ablation runs are shared by all SAEs (one forward each per batch); with
    ``clean_runs`` they are also shared by every later call on the same contexts (:class:`CleanRuns`:
    computed and stored by the first call, read back bit for bit by the others). Pass a list as
    ``per_context`` to receive one record per (context, SAE) with the summed CE and KL of that
    context (``ce_sae``, ``kl_sae``, ``ce_clean``, ``ce_zero``, ``kl_zero``, ``n_ce``, ``n_kl``):
    :func:`bootstrap_downstream` resamples contexts from them.
    """
    if special_ids is None:
        special_ids = special_ids_of(lm)
    clean_fn, spliced_fn = _forward_fns(lm)
    contexts = torch.as_tensor(contexts).long()
    sums = {"ce_clean": 0.0, "ce_zero": 0.0, "kl_zero": 0.0}
    per = {name: {"ce_sae": 0.0, "kl_sae": 0.0} for name in saes}
    n_ce = n_kl = 0
    work = None
    stored = clean_runs.bind(lm, contexts, batch_size) if clean_runs is not None else None
    for b, i in enumerate(range(0, len(contexts), batch_size)):
        tok = contexts[i : i + batch_size]
        metric_mask = keep_mask(tok, special_ids)
        splice_mask = metric_mask if exclude_special_tokens else torch.ones_like(metric_mask)
        ce_mask = metric_mask[:, :-1]

        shared = stored.read(b, tok) if stored is not None else None
        if shared is None:
            shared = _clean_and_zero(clean_fn, spliced_fn, tok)
            if stored is not None:
                stored.write(b, tok, shared)
        resid, clean_logp = shared["resid"], shared["clean_logp"]
        ce_clean, ce_zero, kl_zero = shared["ce_clean"], shared["ce_zero"], shared["kl_zero"]
        del shared
        clean_p = clean_logp.exp()
        # one [B, T, V] work buffer per batch holds each SAE run's log-probabilities, then its KL terms
        if work is None or work.shape != clean_logp.shape:
            work = torch.empty_like(clean_logp)
        sums["ce_clean"] += float(ce_clean[ce_mask].double().sum())
        sums["ce_zero"] += float(ce_zero[ce_mask].double().sum())
        sums["kl_zero"] += float(kl_zero[metric_mask].double().sum())
        n_ce += int(ce_mask.sum())
        n_kl += int(metric_mask.sum())
        if per_context is not None:
            ctx = {"ce_clean": _row_sums(ce_clean, ce_mask), "ce_zero": _row_sums(ce_zero, ce_mask),
                   "kl_zero": _row_sums(kl_zero, metric_mask),
                   "n_ce": ce_mask.sum(-1).tolist(), "n_kl": metric_mask.sum(-1).tolist()}
        m = splice_mask.to(resid.device)[..., None]
        for name, sae in saes.items():
            x_hat = sae.decode(sae.encode(to_sae(sae, resid))).to(device=resid.device, dtype=resid.dtype)
            logp = _logp(spliced_fn(tok, resid, torch.where(m, x_hat, resid)), out=work)
            ce_s = _ce_per_token(logp, tok)
            kl_s = _kl_per_token(clean_p, clean_logp, logp, consume=True)
            per[name]["ce_sae"] += float(ce_s[ce_mask].double().sum())
            per[name]["kl_sae"] += float(kl_s[metric_mask].double().sum())
            if per_context is not None:
                ce_r, kl_r = _row_sums(ce_s, ce_mask), _row_sums(kl_s, metric_mask)
                for j in range(len(tok)):
                    per_context.append({"sae": name, "context": i + j, "ce_sae": ce_r[j], "kl_sae": kl_r[j],
                                        **{key: ctx[key][j] for key in ctx}})
            del logp
    if stored is not None:
        stored.finish()
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


def _row_sums(values: torch.Tensor, mask: torch.Tensor) -> list[float]:
    return (values.double() * mask.to(values.device).double()).sum(-1).tolist()


def bootstrap_downstream(per_context: pd.DataFrame, n_boot: int = 1000, seed: int = 0,
                         confidence: float = 0.95) -> pd.DataFrame:
    """Evaluation noise of the CE-loss and KL scores: a bootstrap over the evaluation contexts.

    ``per_context``: the records of :func:`downstream_metrics` (one row per SAE and context). Each
    replicate draws the contexts with replacement (the same draw for every SAE, as the clean and
    zero-ablation runs are shared) and recomputes both scores exactly as the point estimate does
    (token-weighted means of the per-context sums). Returns one row per SAE and score with the
    bootstrap standard error and the half-width of the percentile interval.
    """
    rng = np.random.default_rng(seed)
    rows = []
    ctxs = np.sort(per_context["context"].unique())
    draws = rng.integers(0, len(ctxs), size=(n_boot, len(ctxs)))
    lo_q, hi_q = 50 * (1 - confidence), 50 * (1 + confidence)
    for name, g in per_context.groupby("sae", sort=False):
        g = g.set_index("context").loc[ctxs]
        a = {c: g[c].to_numpy(np.float64)[draws].sum(1) for c in
             ("ce_sae", "kl_sae", "ce_clean", "ce_zero", "kl_zero", "n_ce", "n_kl")}
        ce_s, ce_c, ce_z = a["ce_sae"] / a["n_ce"], a["ce_clean"] / a["n_ce"], a["ce_zero"] / a["n_ce"]
        kl_s, kl_z = a["kl_sae"] / a["n_kl"], a["kl_zero"] / a["n_kl"]
        scores = {"ce_loss_score": (ce_z - ce_s) / (ce_z - ce_c), "kl_div_score": (kl_z - kl_s) / kl_z}
        for metric, v in scores.items():
            lo, hi = np.percentile(v, [lo_q, hi_q])
            rows.append({"sae": name, "metric": metric, "boot_se": float(v.std(ddof=1)),
                         "boot_half": float((hi - lo) / 2), "n_contexts": int(len(ctxs)), "n_boot": int(n_boot)})
    return pd.DataFrame(rows)

"""Per-latent interpretability: statistics, top-activating contexts, logit effects, synthetic maximiser.

Follows the authors' ``sae_vis`` analysis (paper-recipe.md section 5): for a latent, its top
activating contexts with the peak token highlighted, an activation histogram, density, mean and
max activation, decoder norm, the logit effects of its decoder row through the unembedding, and a
synthetic input found by optimising Gumbel-softmax soft tokens (sequence length 64, Adam lr 0.1,
about 200 steps, tau 1, entropy weight 0.01, special tokens masked). :func:`comparable_latents`
picks pairs of latents from two SAEs in the same density range for side-by-side panels.

``acts`` arguments accept an ``ActivationCache`` or a tensor ``[N, d_in]``; codes are computed in
batches and never held densely for all latents.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from vsae.evals.common import encode_sparse, few_threads, special_ids_of, to_sae

# --------------------------------------------------------------------------------------------
# Activations and statistics
# --------------------------------------------------------------------------------------------


def _source(acts, n_tokens=None):
    if hasattr(acts, "get") and hasattr(acts, "acts"):
        n = len(acts)
        get = lambda a, b: acts.get(np.arange(a, b)).float()  # noqa: E731
    else:
        t = acts if isinstance(acts, torch.Tensor) else torch.as_tensor(np.asarray(acts))
        n = t.shape[0]
        get = lambda a, b: t[a:b].float()  # noqa: E731
    if n_tokens is not None:
        n = min(n, int(n_tokens))
    return n, get


@torch.no_grad()
def latent_activations(sae, acts, latents: Sequence[int], *, n_tokens: int | None = None,
                       batch_tokens: int = 4096) -> np.ndarray:
    """Activations ``[n_tokens, len(latents)]`` of the chosen latents on every token."""
    n, get = _source(acts, n_tokens)
    lat = torch.as_tensor(list(latents), dtype=torch.long)
    out = np.zeros((n, len(lat)), dtype=np.float32)
    for a in range(0, n, batch_tokens):
        b = min(n, a + batch_tokens)
        f = sae.encode(to_sae(sae, get(a, b)))
        out[a:b] = f[:, lat.to(f.device)].float().cpu().numpy()
    return out


@torch.no_grad()
def latent_stats(sae, acts, *, n_tokens: int | None = None, batch_tokens: int = 4096) -> pd.DataFrame:
    """One row per latent: density, sparsity (1 - density), firings, mean (when firing and overall),
    max activation and decoder norm."""
    n, get = _source(acts, n_tokens)
    d_sae = int(sae.W_dec.shape[0])
    fires = torch.zeros(d_sae, dtype=torch.float64)
    total = torch.zeros(d_sae, dtype=torch.float64)
    mx = torch.full((d_sae,), float("-inf"), dtype=torch.float64)
    for a in range(0, n, batch_tokens):
        b = min(n, a + batch_tokens)
        vals, idx = encode_sparse(sae, get(a, b))
        nz = vals != 0
        v, i = vals[nz].double(), idx[nz]
        fires.index_add_(0, i, torch.ones_like(v))
        total.index_add_(0, i, v)
        mx.scatter_reduce_(0, i, v, reduce="amax")
    dens = fires / max(n, 1)
    mean_firing = torch.where(fires > 0, total / fires.clamp_min(1), torch.zeros_like(total))
    return pd.DataFrame({
        "latent": np.arange(d_sae), "density": dens.numpy(), "sparsity": 1 - dens.numpy(),
        "n_fires": fires.numpy().astype(np.int64), "mean_activation": mean_firing.numpy(),
        "mean_activation_all": (total / max(n, 1)).numpy(),
        "max_activation": torch.where(fires > 0, mx, torch.zeros_like(mx)).numpy(),
        "decoder_norm": sae.W_dec.detach().float().norm(dim=-1).cpu().numpy(),
    })


def activation_histogram(values, bins: int | Sequence[float] = 50, nonzero_only: bool = True) -> pd.DataFrame:
    """Histogram data (bin edges and counts) of a latent's activations."""
    v = np.asarray(values, dtype=np.float64).ravel()
    if nonzero_only:
        v = v[v != 0]
    if v.size == 0:
        return pd.DataFrame({"bin_left": [], "bin_right": [], "count": []})
    counts, edges = np.histogram(v, bins=bins)
    return pd.DataFrame({"bin_left": edges[:-1], "bin_right": edges[1:], "count": counts})


# --------------------------------------------------------------------------------------------
# Top-activating contexts
# --------------------------------------------------------------------------------------------


def top_contexts(cache, values: np.ndarray, *, k: int = 20, left: int = 12, right: int = 4,
                 unique_contexts: bool = True) -> pd.DataFrame:
    """The ``k`` highest activations of a latent, with a token window around each.

    Args:
        cache: an ``ActivationCache`` (``tokens``, ``ctx_index``) the values were computed on.
        values: the latent's activation on the first ``len(values)`` tokens of the cache.
        unique_contexts: at most one example (the peak) per context.
    Returns:
        rows ``rank, activation, token_index, ctx_index, tokens, acts, peak`` where ``tokens`` and
        ``acts`` are the window (never crossing a context boundary) and ``peak`` the peak's offset.
    """
    values = np.asarray(values, dtype=np.float32).ravel()
    toks = np.asarray(cache.tokens)
    ctx = np.asarray(cache.ctx_index)
    n = len(values)
    order = np.argsort(-values, kind="stable")
    rows, seen = [], set()
    for i in order:
        if values[i] <= 0 or len(rows) >= k:
            break
        c = int(ctx[i])
        if unique_contexts and c in seen:
            continue
        seen.add(c)
        a, b = max(0, i - left), min(n, i + right + 1)
        while ctx[a] != c:
            a += 1
        while ctx[b - 1] != c:
            b -= 1
        rows.append({"rank": len(rows), "activation": float(values[i]), "token_index": int(i), "ctx_index": c,
                     "tokens": toks[a:b].astype(int).tolist(), "acts": values[a:b].astype(float).tolist(),
                     "peak": int(i - a)})
    return pd.DataFrame(rows, columns=["rank", "activation", "token_index", "ctx_index", "tokens", "acts", "peak"])


def _tok_str(decode: Callable[[list[int]], str], t: int) -> str:
    s = decode([int(t)])
    return s.replace("\n", "\u21b5")


def contexts_html(contexts: pd.DataFrame, decode: Callable[[list[int]], str] | Any, *, title: str | None = None,
                  color: str = "255, 140, 0") -> str:
    """HTML for the book: one line per context, tokens shaded by activation, the peak boxed.

    ``decode`` is a tokenizer (its ``decode``) or a function ``list[int] -> str``. All text is escaped.
    """
    dec = decode.decode if hasattr(decode, "decode") else decode
    parts = ['<div class="vsae-contexts" style="font-family: monospace; font-size: 0.85em; line-height: 1.7">']
    if title:
        parts.append(f"<div><b>{html.escape(title)}</b></div>")
    vmax = max([max(r) for r in contexts["acts"]] + [1e-12]) if len(contexts) else 1.0
    for _, r in contexts.iterrows():
        spans = []
        for j, (t, a) in enumerate(zip(r["tokens"], r["acts"])):
            s = html.escape(_tok_str(dec, t))
            alpha = max(0.0, min(1.0, float(a) / vmax))
            style = f"background: rgba({color}, {alpha:.2f});"
            if j == r["peak"]:
                style += " border: 1px solid black; font-weight: bold;"
            spans.append(f'<span style="{style}" title="{float(a):.3f}">{s}</span>')
        parts.append(f'<div><span style="color: #666">{float(r["activation"]):.2f}</span>&nbsp;{"".join(spans)}</div>')
    parts.append("</div>")
    return "\n".join(parts)


# --------------------------------------------------------------------------------------------
# Logit effects
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def logit_effects(sae, lm, latent: int, k: int = 10, decode: Callable | None = None) -> pd.DataFrame:
    """Decoder row through the unembedding (``W_dec[i] @ W_U``): top ``k`` boosted and suppressed tokens."""
    W_U = lm.W_U.detach().float().cpu()
    eff = sae.W_dec[latent].detach().float().cpu() @ W_U
    V = eff.shape[0]
    tok = getattr(lm, "tokenizer", None)
    n_real = len(tok) if tok is not None and hasattr(tok, "__len__") else V
    eff = eff.clone()
    eff[min(n_real, V):] = float("nan")
    dec = decode or (tok.decode if tok is not None else (lambda ids: str(ids[0])))
    e = torch.nan_to_num(eff, nan=0.0)
    valid = ~torch.isnan(eff)
    rows = []
    for direction, sign in (("boosted", 1.0), ("suppressed", -1.0)):
        s = torch.where(valid, sign * e, torch.full_like(e, float("-inf")))
        top = s.topk(min(k, int(valid.sum()))).indices
        for rank, t in enumerate(top.tolist()):
            rows.append({"direction": direction, "rank": rank, "token_id": t, "token": dec([t]),
                         "effect": float(eff[t])})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------
# Synthetic maximiser
# --------------------------------------------------------------------------------------------


@dataclass
class SyntheticResult:
    latent: int
    tokens: list[int]
    text: str
    #: the latent's activation (``sae.encode``) at each position of the hard (argmax) sequence
    activations: np.ndarray
    #: per step: objective, mean soft activation, entropy
    history: pd.DataFrame

    @property
    def max_activation(self) -> float:
        return float(self.activations.max()) if self.activations.size else float("nan")

    @property
    def mean_activation(self) -> float:
        return float(self.activations.mean()) if self.activations.size else float("nan")


def synthetic_maximiser(sae, lm, latent: int, *, seq_len: int = 64, steps: int = 200, lr: float = 0.1,
                        tau: float = 1.0, entropy_weight: float = 0.01, seed: int = 0,
                        init_scale: float = 0.1) -> SyntheticResult:
    """Optimise soft tokens (Gumbel-softmax over per-position logits) to drive ``latent`` up.

    Loss per step: ``-mean_t (x_t . W_enc[:, i]) + entropy_weight * mean_t H(softmax(logits_t))``,
    where ``x = lm.resid_from_embeds(gumbel_softmax(logits, tau) @ W_E)``; the linear score has the
    pre-activation's gradient everywhere (ReLU and TopK would cut it when the latent is off).
    Special tokens (and embedding rows beyond the tokenizer's vocabulary) are masked.
    """
    W_E = lm.W_E.detach().float()
    V = W_E.shape[0]
    mask = torch.zeros(V)
    for s in special_ids_of(lm):
        if 0 <= s < V:
            mask[s] = float("-inf")
    tok = getattr(lm, "tokenizer", None)
    if tok is not None and hasattr(tok, "__len__") and len(tok) < V:
        mask[len(tok):] = float("-inf")
    w = sae.W_enc[:, latent].detach().float()
    gen = torch.Generator().manual_seed(int(seed))
    theta = (init_scale * torch.randn(seq_len, V, generator=gen)).requires_grad_(True)
    opt = torch.optim.Adam([theta], lr=lr)
    hist = []
    small = int(getattr(lm, "d_model", 512)) * seq_len < 50_000  # tiny models: threads only add overhead
    with torch.enable_grad(), torch.random.fork_rng(devices=[]), few_threads(1 if small else 64):
        torch.manual_seed(int(seed))
        for step in range(steps):
            logits = theta + mask
            y = F.gumbel_softmax(logits, tau=tau, hard=False, dim=-1)
            x = lm.resid_from_embeds((y @ W_E.to(y.dtype))[None])[0].float()
            score = (x @ w.to(x.device)).mean()
            logp = F.log_softmax(logits, dim=-1)
            ent = -(logp.exp() * torch.nan_to_num(logp, neginf=0.0)).sum(-1).mean()
            loss = -score + entropy_weight * ent
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                act = sae.encode(to_sae(sae, x.detach()))[:, latent].float().mean()
            hist.append({"step": step, "objective": float(score.detach()), "soft_activation": float(act),
                         "entropy": float(ent.detach())})
    with torch.no_grad():
        hard = (theta + mask).argmax(-1)
        r = lm.resid(hard[None])[0]
        acts = sae.encode(to_sae(sae, r))[:, latent].float().cpu().numpy()
    ids = hard.tolist()
    text = tok.decode(ids) if tok is not None and hasattr(tok, "decode") else " ".join(map(str, ids))
    return SyntheticResult(int(latent), ids, text, acts, pd.DataFrame(hist))


# --------------------------------------------------------------------------------------------
# Comparable latents
# --------------------------------------------------------------------------------------------


def comparable_latents(stats_a: pd.DataFrame, stats_b: pd.DataFrame, n: int = 4,
                       density_range: tuple[float, float] = (1e-3, 1e-1), seed: int = 0) -> pd.DataFrame:
    """Pairs ``(latent_a, latent_b)`` of two SAEs with matched densities inside ``density_range``.

    Targets are ``n`` log-spaced densities across the overlap of both SAEs' latents in the range;
    for each, the nearest unused latent of each SAE (ties broken by a seeded shuffle).
    """
    lo, hi = density_range
    rng = np.random.default_rng(seed)

    def pick(stats):
        s = stats[(stats["density"] >= lo) & (stats["density"] <= hi)]
        return s.iloc[rng.permutation(len(s))].reset_index(drop=True)

    a, b = pick(stats_a), pick(stats_b)
    if len(a) == 0 or len(b) == 0:
        return pd.DataFrame(columns=["pair", "latent_a", "density_a", "latent_b", "density_b"])
    la = max(a["density"].min(), b["density"].min())
    ha = min(a["density"].max(), b["density"].max())
    if la > ha:  # no overlap: spread over the union instead
        la, ha = min(a["density"].min(), b["density"].min()), max(a["density"].max(), b["density"].max())
    targets = np.exp(np.linspace(np.log(la), np.log(ha), n)) if n > 1 else np.array([np.sqrt(la * ha)])
    used_a, used_b, rows = set(), set(), []
    for p, t in enumerate(targets):
        ia = (a["density"].sub(t).abs() + a.index.isin(list(used_a)) * 1e9).idxmin()
        ib = (b["density"].sub(t).abs() + b.index.isin(list(used_b)) * 1e9).idxmin()
        used_a.add(ia)
        used_b.add(ib)
        row = {"pair": p, "target_density": float(t),
               "latent_a": int(a.at[ia, "latent"]), "density_a": float(a.at[ia, "density"]),
               "latent_b": int(b.at[ib, "latent"]), "density_b": float(b.at[ib, "density"])}
        for col in ("max_activation", "mean_activation"):
            if col in a and col in b:
                row[f"{col}_a"], row[f"{col}_b"] = float(a.at[ia, col]), float(b.at[ib, col])
        rows.append(row)
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------
# Everything about one latent, for the book's side-by-side panels
# --------------------------------------------------------------------------------------------


@dataclass
class FeatureReport:
    """What the feature-interpretability chapter shows for one latent of one SAE."""

    sae: str
    latent: int
    stats: dict
    histogram: pd.DataFrame
    contexts: pd.DataFrame
    contexts_html: str
    logit_effects: pd.DataFrame
    synthetic: SyntheticResult | None


def feature_report(name: str, sae, lm, acts, latent: int, stats: pd.DataFrame | None = None, *,
                   n_contexts: int = 10, synthetic_steps: int = 200, seed: int = 0) -> FeatureReport:
    """Statistics, histogram, top contexts (HTML), logit effects and a synthetic maximiser of ``latent``.

    ``stats``: the SAE's :func:`latent_stats` table (computed when omitted).
    """
    if stats is None:
        stats = latent_stats(sae, acts)
    values = latent_activations(sae, acts, [latent])[:, 0]
    ctx = top_contexts(acts, values, k=n_contexts)
    row = stats.set_index("latent").loc[int(latent)].to_dict()
    title = (f"{name} latent {latent}: density {row['density']:.4f}, mean {row['mean_activation']:.3f}, "
             f"max {row['max_activation']:.3f}, decoder norm {row['decoder_norm']:.3f}")
    html = contexts_html(ctx, lm.tokenizer, title=title)
    syn = (synthetic_maximiser(sae, lm, latent, steps=synthetic_steps, seed=seed) if synthetic_steps > 0 else None)
    return FeatureReport(name, int(latent), row, activation_histogram(values, bins=40), ctx, html,
                         logit_effects(sae, lm, latent, k=8), syn)

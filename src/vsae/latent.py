"""The latent space as a whole: token-space and feature-space t-SNE, decoder independence.

Follows the authors' ``analysis_scripts/analyze_latent_space.py`` (paper-recipe.md section 3.7):

* **Token space** (:func:`token_tsne`): the sparse codes of ``n`` tokens, restricted to latents active
  on more than 1% of them, PCA to 50 dimensions, t-SNE (perplexity 30, seeded).
* **Feature space** (:func:`feature_tsne`): each latent is a point whose vector is its z-scored
  activation pattern over the ``n`` tokens; t-SNE with perplexity ``min(30, (m - 1) // 3)`` and
  k-means with ``min(10, max(2, m // 10))`` clusters; utilisation (density) per cluster.
* **Independence** (:func:`decoder_cosine_stats`): the distribution of pairwise cosine similarities
  between the decoder rows of alive latents (mean, max, quantiles), per SAE.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from vsae.evals.common import encode_sparse


@dataclass
class CodeSample:
    """Codes of ``n`` tokens for the latents kept (``latents``), and every latent's density on them."""

    codes: np.ndarray  # [n, m] float32, columns = latents
    latents: np.ndarray  # [m]
    density: np.ndarray  # [d_sae]
    token_index: np.ndarray  # [n] rows of the source the tokens came from


@torch.no_grad()
def collect_codes(sae, acts, n_tokens: int = 20_000, *, min_density: float = 0.01, seed: int = 42,
                  batch_tokens: int = 4096, sample: bool = True) -> CodeSample:
    """Encode ``n_tokens`` tokens (a seeded sample, or the first ones) and keep latents with
    density > ``min_density`` as dense columns; nothing ``d_sae``-wide is held for all tokens."""
    if hasattr(acts, "get") and hasattr(acts, "acts"):
        N = len(acts)
        get = lambda idx: acts.get(idx).float()  # noqa: E731
    else:
        t = acts if isinstance(acts, torch.Tensor) else torch.as_tensor(np.asarray(acts))
        N = t.shape[0]
        get = lambda idx: t[torch.as_tensor(idx)].float()  # noqa: E731
    n = min(int(n_tokens), N)
    idx = np.sort(np.random.default_rng(seed).choice(N, size=n, replace=False)) if sample and n < N else np.arange(n)
    d_sae = int(sae.W_dec.shape[0])
    vals_l, idx_l = [], []
    for a in range(0, n, batch_tokens):
        v, i = encode_sparse(sae, get(idx[a : a + batch_tokens]))
        vals_l.append(v)
        idx_l.append(i.int())
    vals = torch.cat(vals_l) if vals_l else torch.zeros(0, 1)
    ids = torch.cat(idx_l).long() if idx_l else torch.zeros(0, 1, dtype=torch.long)
    nz = vals != 0
    fires = torch.bincount(ids[nz], minlength=d_sae).double()
    density = (fires / max(n, 1)).numpy()
    latents = np.flatnonzero(density > min_density)
    col = torch.full((d_sae,), -1, dtype=torch.long)
    col[torch.as_tensor(latents, dtype=torch.long)] = torch.arange(len(latents))
    codes = torch.zeros(n, len(latents), dtype=torch.float32)
    c = col[ids]
    keep = nz & (c >= 0)
    rows = torch.arange(n)[:, None].expand_as(ids)
    codes[rows[keep], c[keep]] = vals[keep].float()
    return CodeSample(codes.numpy(), latents, density, idx)


def _limits(n_points: int | None = None):
    """One OpenMP/BLAS thread for PCA, t-SNE and k-means, whatever the size: the embeddings (and so the
    figures) must come out bit for bit the same on every re-execution, and a multi-threaded reduction
    (k-means' per-thread centre sums, added in the order the threads finish) is not. It is also the fast
    choice on the book's machines: the barrier-heavy t-SNE gradient loop slowed ~40x on two busy cores
    with two threads, and 6,000 points took 7.5 s on one thread against 12-25 s on two (2026-12-03).
    ``n_points`` is accepted for the callers' sake and ignored."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(1)


def _tsne(X: np.ndarray, perplexity: float, seed: int, max_iter: int):
    from sklearn.manifold import TSNE

    perplexity = float(min(perplexity, max(1.0, (len(X) - 1) / 3)))
    ts = TSNE(n_components=2, perplexity=perplexity, learning_rate="auto", init="pca", max_iter=max_iter,
              random_state=seed)
    with _limits(len(X)):
        Y = ts.fit_transform(X.astype(np.float32))
    return Y, float(ts.kl_divergence_), perplexity


def token_tsne(sample: CodeSample, *, pca_dim: int = 50, perplexity: float = 30.0, seed: int = 42,
               max_iter: int = 1000, n_points: int | None = None) -> pd.DataFrame:
    """Token-space t-SNE of the codes (latents > 1% density already selected by ``collect_codes``).

    Returns one row per token (``x``, ``y``, ``token_index``, ``l0`` within the kept latents);
    ``attrs`` holds the t-SNE KL divergence and the perplexity used.
    """
    from sklearn.decomposition import PCA

    X = sample.codes
    rows = np.arange(len(X))
    if n_points is not None and n_points < len(X):
        rows = np.sort(np.random.default_rng(seed).choice(len(X), n_points, replace=False))
        X = X[rows]
    k = int(min(pca_dim, X.shape[1], X.shape[0]))
    with _limits():
        Z = PCA(n_components=k, random_state=seed).fit_transform(X) if k >= 2 else X
    Y, kl, perp = _tsne(Z, perplexity, seed, max_iter)
    df = pd.DataFrame({"x": Y[:, 0], "y": Y[:, 1], "token_index": sample.token_index[rows],
                       "l0": (X != 0).sum(1)})
    df.attrs.update({"kl_divergence": kl, "perplexity": perp, "pca_dim": k, "n_latents": int(X.shape[1])})
    return df


def feature_tsne(sample: CodeSample, *, seed: int = 42, max_iter: int = 1000, perplexity: float | None = None,
                 n_clusters: int | None = None, pca_dim: int | None = None) -> pd.DataFrame:
    """Feature-space t-SNE: each kept latent is a point (its z-scored activation pattern).

    Perplexity ``min(30, (m - 1) // 3)`` and ``min(10, max(2, m // 10))`` k-means clusters unless
    given. Returns one row per latent: ``latent, x, y, cluster, utilization`` (density on the
    sample) and ``mean_activation`` (mean when firing); ``attrs`` has the KL divergence.
    """
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA

    A = sample.codes.T.astype(np.float64)  # [m, n]
    m = A.shape[0]
    if m < 4:
        raise ValueError(f"feature t-SNE needs at least 4 latents, got {m}")
    mu = A.mean(1, keepdims=True)
    sd = A.std(1, keepdims=True)
    Zs = np.where(sd > 0, (A - mu) / np.where(sd > 0, sd, 1.0), 0.0)
    if pca_dim is not None and pca_dim < min(Zs.shape):
        with _limits():
            Zs = PCA(n_components=pca_dim, random_state=seed).fit_transform(Zs)
    perp = perplexity if perplexity is not None else min(30, (m - 1) // 3)
    Y, kl, perp = _tsne(Zs, max(perp, 1), seed, max_iter)
    k = n_clusters if n_clusters is not None else min(10, max(2, m // 10))
    with _limits(len(Y)):
        labels = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(Y)
    fires = (sample.codes != 0)
    cnt = fires.sum(0)
    mean_act = np.where(cnt > 0, sample.codes.sum(0) / np.maximum(cnt, 1), 0.0)
    df = pd.DataFrame({"latent": sample.latents, "x": Y[:, 0], "y": Y[:, 1], "cluster": labels,
                       "utilization": sample.density[sample.latents], "mean_activation": mean_act})
    df.attrs.update({"kl_divergence": kl, "perplexity": perp, "n_clusters": int(k)})
    return df


def cluster_utilisation(features: pd.DataFrame) -> pd.DataFrame:
    """Per k-means cluster: number of latents, mean utilisation (density) and mean activation."""
    return (features.groupby("cluster", as_index=False)
            .agg(n_latents=("latent", "size"), mean_utilization=("utilization", "mean"),
                 mean_activation=("mean_activation", "mean")))


# --------------------------------------------------------------------------------------------
# Decoder independence
# --------------------------------------------------------------------------------------------

QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)


def pairwise_decoder_cosines(W_dec: torch.Tensor, alive=None, *, chunk: int = 1024) -> np.ndarray:
    """Upper-triangle cosine similarities between the (alive) decoder rows, as a flat float32 array."""
    W = torch.as_tensor(W_dec).detach().float().cpu()
    if alive is not None:
        W = W[torch.as_tensor(np.asarray(alive)).bool() if np.asarray(alive).dtype == bool
              else torch.as_tensor(np.asarray(alive), dtype=torch.long)]
    Wn = F.normalize(W, dim=-1)
    m = Wn.shape[0]
    out = []
    for a in range(0, m, chunk):
        b = min(m, a + chunk)
        s = Wn[a:b] @ Wn.T
        iu = torch.triu_indices(b - a, m, offset=a + 1)
        out.append(s[iu[0], iu[1]].numpy())
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def decoder_cosine_stats(sae, alive=None, quantiles: Sequence[float] = QUANTILES) -> dict:
    """Mean, std, mean |cos|, max, min, quantiles of pairwise decoder cosines among alive latents,
    and the mean over latents of each one's largest cosine to another."""
    W = sae.W_dec.detach().float().cpu()
    if alive is not None:
        a = np.asarray(alive)
        W = W[torch.as_tensor(a) if a.dtype == bool else torch.as_tensor(a, dtype=torch.long)]
    m = W.shape[0]
    out: dict[str, Any] = {"n_latents": int(m)}
    if m < 2:
        return out
    c = pairwise_decoder_cosines(W)
    Wn = F.normalize(W, dim=-1)
    mx = torch.empty(m)
    for i in range(0, m, 1024):
        s = Wn[i : i + 1024] @ Wn.T
        s[torch.arange(s.shape[0]), torch.arange(i, i + s.shape[0])] = float("-inf")
        mx[i : i + 1024] = s.max(1).values
    out.update({"mean": float(c.mean()), "std": float(c.std()), "mean_abs": float(np.abs(c).mean()),
                "max": float(c.max()), "min": float(c.min()), "mean_max_cos": float(mx.mean())})
    for q, v in zip(quantiles, np.quantile(c, quantiles)):
        out[f"q{q:g}"] = float(v)
    return out


def decoder_cosine_table(saes: dict[str, Any], alive: dict[str, Any] | None = None,
                         quantiles: Sequence[float] = QUANTILES) -> pd.DataFrame:
    """One row per SAE of :func:`decoder_cosine_stats`; ``alive[name]`` is a mask, indices or densities."""
    rows = []
    for name, sae in saes.items():
        a = None if alive is None else alive.get(name)
        if a is not None:
            a = np.asarray(a)
            if a.dtype != bool and a.ndim == 1 and len(a) == sae.W_dec.shape[0] and np.issubdtype(a.dtype, np.floating):
                a = a > 0  # densities
        rows.append({"sae": name, **decoder_cosine_stats(sae, a, quantiles)})
    return pd.DataFrame(rows)


def decoder_cosine_histogram(sae, alive=None, bins: int | Sequence[float] = 100, name: str = "") -> pd.DataFrame:
    c = pairwise_decoder_cosines(sae.W_dec, alive)
    counts, edges = np.histogram(c, bins=bins if not isinstance(bins, int) else np.linspace(-1, 1, bins + 1))
    return pd.DataFrame({"sae": name, "bin_left": edges[:-1], "bin_right": edges[1:], "count": counts,
                         "fraction": counts / max(len(c), 1)})


def token_sources(acts, token_index) -> np.ndarray:
    """The corpus source (``speech``, ``novel``, ``email``, ``docs``, ...) of each token of a cache.

    Read from the cache's own records: token -> context (``ctx_index``) -> document (``ctx_doc``) ->
    document id, whose first path component is the :class:`vsae.data.Document` source it was built
    from. Tokens of a tensor source (no cache) get ``"unknown"``.
    """
    idx = np.asarray(token_index, dtype=np.int64)
    if not hasattr(acts, "context_doc_ids") or not hasattr(acts, "ctx_index"):
        return np.full(len(idx), "unknown", dtype=object)
    docs = np.asarray(acts.context_doc_ids(), dtype=object)
    ctx = np.asarray(acts.ctx_index)[idx]
    return np.array([str(d).split("/", 1)[0] for d in docs[ctx]], dtype=object)

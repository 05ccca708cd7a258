"""Figures of chapter 4: core metrics against k, the Pareto plot, densities, alive vs eval tokens."""

from __future__ import annotations


import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .style import MARKERS, PAGE_WIDTH, _log2_k_axis, color, label



METRIC_LABELS = {
    "ce_loss_score": "CE-loss score (higher is better)",
    "kl_div_score": "KL-divergence score",
    "explained_variance": "explained variance",
    "cossim": "cosine similarity",
    "frac_alive": "fraction of alive latents",
    "l0": "L0 (active latents / token)",
    "mse": "MSE per dimension",
}


def _mean_half(df: pd.DataFrame, by: str, y: str) -> pd.DataFrame:
    """Per value of ``by``: mean of ``y`` and its 95% t-interval half-width over the rows (seeds)."""
    from ..stats import seed_summary

    return seed_summary(df, [by], [y])[[by, "mean", "half"]].sort_values(by, ignore_index=True)


def _band(ax, x, mean, half, col) -> None:
    """Shade mean ± half where an interval exists (two or more seeds)."""
    half = pd.Series(np.asarray(half, dtype=float))
    if half.notna().any():
        m = np.asarray(mean, dtype=float)
        h = half.fillna(0).to_numpy()
        ax.fill_between(np.asarray(x), m - h, m + h, color=col, alpha=0.15, lw=0)


def metrics_vs_k(ours: pd.DataFrame, metrics, paper: pd.DataFrame | None = None, ours_label: str = "ours",
                 suptitle: str | None = None):
    """1×len(metrics) panels of a metric against k (log2 axis), one line per architecture.

    ``ours``: columns architecture, k and the metric columns (several rows per (architecture, k) are
    seeds: drawn as their mean with a 95% t-interval band). ``paper``: tidy paper values (metric,
    architecture, k, value), drawn as open markers on dashed lines.
    """
    fig, axes = plt.subplots(1, len(metrics), figsize=(PAGE_WIDTH * 1.2, 3.3))
    axes = np.atleast_1d(axes)
    for ax, m in zip(axes, metrics):
        for arch, g in ours.groupby("architecture", sort=False):
            agg = _mean_half(g, "k", m)
            ax.plot(agg["k"], agg["mean"], marker=MARKERS.get(arch, "o"), color=color(arch), label=f"{label(arch)} ({ours_label})")
            _band(ax, agg["k"], agg["mean"], agg["half"], color(arch))
        if paper is not None:
            pg = paper[paper.metric == m]
            for arch, g in pg.groupby("architecture", sort=False):
                g = g.sort_values("k")
                ax.plot(g["k"], g["value"], ls="--", marker=MARKERS.get(arch, "o"), mfc="none", color=color(arch),
                        alpha=0.7, label=f"{label(arch)} (paper, Pythia-70M)")
        _log2_k_axis(ax, ours["k"].tolist() + ([] if paper is None else paper["k"].tolist()))
        ax.set_xlabel("k (active latents per token)")
        ax.set_ylabel(METRIC_LABELS.get(m, m))
        ax.set_title(METRIC_LABELS.get(m, m).split(" (")[0])
    handles, labels_ = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels_, loc="lower center", ncol=4, bbox_to_anchor=(0.5, -0.1))
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def pareto(ours: pd.DataFrame, paper: pd.DataFrame | None = None, y: str = "explained_variance"):
    """Sparsity (L0) against explained variance, annotated with k (ours: mean over seeds with a 95%
    interval on the y axis); paper values as open markers."""
    fig, ax = plt.subplots(figsize=(PAGE_WIDTH * 0.55, 4.0))
    for arch, g in ours.groupby("architecture", sort=False):
        half = _mean_half(g, "k", y).set_index("k")["half"]
        g = g.groupby("k")[["l0", y]].mean().reset_index().sort_values("l0")
        ax.errorbar(g["l0"], g[y], yerr=half.reindex(g["k"]).fillna(0).to_numpy(), marker=MARKERS.get(arch, "o"),
                    color=color(arch), capsize=3, label=f"{label(arch)} (ours)")
        for _, r in g.iterrows():
            ax.annotate(f"k={int(r['k'])}", (r["l0"], r[y]), textcoords="offset points", xytext=(4, -10), fontsize=7.5,
                        color=color(arch))
    if paper is not None:
        pw = paper.pivot_table(index=["architecture", "k"], columns="metric", values="value").reset_index()
        for arch, g in pw.groupby("architecture", sort=False):
            g = g.sort_values("l0")
            ax.plot(g["l0"], g[y], ls="--", marker=MARKERS.get(arch, "o"), mfc="none", color=color(arch), alpha=0.7,
                    label=f"{label(arch)} (paper)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("L0 (active latents per token, log scale)")
    ax.set_ylabel(METRIC_LABELS.get(y, y))
    ax.set_title("Sparsity vs reconstruction")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def density_histogram(density: pd.DataFrame, saes: list[str], arch_of: dict[str, str]):
    """Per-latent firing density (log10) for the given SAEs; dead latents counted at the left edge."""
    fig, axes = plt.subplots(1, len(saes), figsize=(PAGE_WIDTH * 1.2, 2.8), sharey=True)
    axes = np.atleast_1d(axes)
    for ax, s in zip(axes, saes):
        d = density[density.sae == s]["density"].to_numpy()
        alive = d[d > 0]
        floor = np.log10(alive.min()) - 0.5 if len(alive) else -6
        vals = np.where(d > 0, np.log10(np.clip(d, 1e-12, None)), floor)
        ax.hist(vals, bins=40, color=color(arch_of[s]))
        ax.set_title(f"{s}: {len(alive)}/{len(d)} alive", fontsize=9)
        ax.set_xlabel("log10 firing density")
    axes[0].set_ylabel("latents")
    fig.tight_layout()
    return fig


def alive_vs_tokens(curves: dict[str, pd.DataFrame], arch_of: dict[str, str]):
    """Fraction of latents alive within the first t evaluation tokens (log x), one line per run;
    a flat right end means the count has saturated."""
    fig, ax = plt.subplots(figsize=(PAGE_WIDTH * 0.62, 3.4))
    ks = sorted(curves, key=lambda r: arch_of.get(r, ""))  # stable: keeps the caller's k order per architecture
    shades = {}
    for arch in set(arch_of.values()):
        runs = [r for r in ks if arch_of.get(r) == arch]
        for i, r in enumerate(runs):
            shades[r] = 0.45 + 0.55 * (i + 1) / max(len(runs), 1)
    for r in ks:
        c = curves[r]
        ax.plot(c["tokens"], c["frac_alive"], color=color(arch_of.get(r, "")), alpha=shades.get(r, 1.0),
                marker=MARKERS.get(arch_of.get(r, ""), "o"), ms=3, lw=1.4, label=r)
    ax.set_xscale("log")
    ax.set_xlabel("evaluation tokens counted (log scale)")
    ax.set_ylabel("fraction of latents alive")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7, ncol=2, loc="lower right")
    fig.tight_layout()
    return fig

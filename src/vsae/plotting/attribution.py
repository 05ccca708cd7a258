"""Figures of the attribution chapter (12): the ladder, rung by rung; the runs at the paper's budget."""

from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .. import stats
from .style import PAGE_WIDTH, color

#: metric -> axis label of the ladder figure
LADDER_LABELS = {"frac_alive": "fraction of latents alive", "explained_variance_saebench": "explained variance (SAE Bench)",
                 "ce_loss_score": "CE-loss score", "tpp_total_20": "TPP total at N = 20"}
#: side -> (recipe label, sign of a flipped rung: "vSAE − kl" removes the KL term, "TopK + kl" adds it)
_SIDE = {"vsae": ("vSAE", "−"), "topk": ("TopK", "+")}


def ladder_bars(table: pd.DataFrame, metrics: Sequence[str] = tuple(LADDER_LABELS), confidence: float = 0.95):
    """One panel per metric; in each, one horizontal bar per ladder run (the two recipes and every
    flipped difference) at its mean over seeds, with the 95% t-interval as an error bar, vSAE-side
    rungs above TopK-side ones; dashed lines mark the two unmodified recipes. ``table``:
    :func:`vsae.attribution.ladder_table` rows."""
    metrics = [m for m in metrics if m in table.columns and np.isfinite(table[m].to_numpy(float)).any()]
    rows = [(side, rung, _SIDE[side][0] if rung == "recipe" else f"{_SIDE[side][0]} {_SIDE[side][1]} {rung}")
            for side in ("vsae", "topk") for rung in dict.fromkeys(table[table.side == side].rung)]
    fig, axes = plt.subplots(1, len(metrics), figsize=(PAGE_WIDTH, 0.32 * len(rows) + 1.6), sharey=True)
    axes = np.atleast_1d(axes)
    y = np.arange(len(rows))[::-1]
    for ax, m in zip(axes, metrics):
        means, halves = [], []
        for side, rung, _ in rows:
            v = table[(table.side == side) & (table.rung == rung)][m].to_numpy(float)
            mean, half, n = stats.t_interval(v, confidence)
            means.append(mean)
            halves.append(half if np.isfinite(half) else 0.0)
        means, halves = np.array(means), np.array(halves)
        cols = [color(side) for side, _, _ in rows]
        alphas = [1.0 if rung == "recipe" else 0.55 for _, rung, _ in rows]
        for yi, mu, h, c, a in zip(y, means, halves, cols, alphas):
            ax.barh(yi, mu, color=c, alpha=a, height=0.7)
            ax.errorbar(mu, yi, xerr=h, color="black", lw=1, capsize=2)
            ax.annotate(f"{mu:.3f}", (mu + h, yi), xytext=(3, 0), textcoords="offset points", va="center", fontsize=7.5)
        for i, (side, rung, _) in enumerate(rows):
            if rung == "recipe":
                ax.axvline(means[i], color=color(side), ls="--", lw=1)
        fin = means[np.isfinite(means)]
        lo, hi = (min(0.0, fin.min()), fin.max()) if fin.size else (0.0, 1.0)
        ax.set_xlim(lo, hi + 0.18 * ((hi - lo) or 1.0))
        if m != "frac_alive" and fin.size:  # zoom to the values: small differences must be visible
            span = (fin.max() - fin.min()) or abs(fin.max()) or 1.0
            ax.set_xlim(fin.min() - 0.3 * span, fin.max() + 0.45 * span)
        ax.set_xlabel(LADDER_LABELS.get(m, m))
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(y, [name for _, _, name in rows])
    axes[0].set_ylabel("run (recipe, one difference flipped)")
    n = int(table.groupby(["side", "rung"]).size().max())
    fig.suptitle(f"The attribution ladder: mean and 95% interval over {n} seed{'s' if n != 1 else ''} "
                 "(dashed: the two recipes)", fontsize=10)
    fig.tight_layout()
    return fig


#: training-log quantity -> axis label of :func:`convergence_curves` (``frac_inactive``'s names its window)
CURVE_LABELS = {"frac_inactive": "fraction of latents silent\nfor the last {window} tokens",
                "ev": "explained variance\n(training batches)", "mse": "reconstruction MSE\n(normalised units)"}


def convergence_curves(curves: pd.DataFrame, metrics: Sequence[str] = tuple(CURVE_LABELS), budget: str = "paper",
                       mark_tokens: float | None = None, window_tokens: int | None = None):
    """One panel per training-log quantity against training tokens, for the runs of ``budget``: TopK
    and the vSAE, the mean over seeds as a line and the seeds' range as a band. ``curves``:
    :func:`vsae.convergence.curves`. ``mark_tokens``: a dotted vertical line (the headline budget).
    ``window_tokens``: the trainer's ``inactive_window_tokens``; ``frac_inactive`` is drawn only from
    there on (before, no latent can have been silent that long, so it is 0 by construction)."""
    c = curves[curves.budget == budget]
    metrics = [m for m in metrics if m in set(c.metric)]
    fig, axes = plt.subplots(1, len(metrics), figsize=(PAGE_WIDTH, 3.0))
    axes = np.atleast_1d(axes)
    for ax, m in zip(axes, metrics):
        drawn = False
        for arch in ("topk", "vsae"):
            g = c[(c.architecture == arch) & (c.metric == m)].sort_values("tokens")
            if m == "frac_inactive" and window_tokens:
                g = g[g.tokens >= window_tokens]
            if g.empty:
                continue
            t = g.tokens.to_numpy(float) / 1e6
            ax.plot(t, g["mean"], color=color(arch), lw=1.5, label={"topk": "TopK", "vsae": "vSAE"}[arch])
            ax.fill_between(t, g["lo"], g["hi"], color=color(arch), alpha=0.2, lw=0)
            drawn = True
        if not drawn:
            ax.text(0.5, 0.5, "the runs are shorter\nthan the window", transform=ax.transAxes, ha="center", va="center")
        if mark_tokens:
            ax.axvline(mark_tokens / 1e6, color="0.4", ls=":", lw=1)
        ax.set_xlabel("training tokens (millions)")
        window = f"{window_tokens:,}" if window_tokens else "trainer's window of"
        ax.set_ylabel(CURVE_LABELS.get(m, m).format(window=window))
        if m == "mse":
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    next((ax for ax in axes if ax.get_legend_handles_labels()[0]), axes[0]).legend(fontsize=8)
    note = " (dotted: the headline budget)" if mark_tokens else ""
    fig.suptitle(f"Training at the paper's budget: mean over seeds, band = range{note}", fontsize=10)
    fig.tight_layout()
    return fig

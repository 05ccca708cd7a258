"""Figures of chapter 11: control bars, the KL-weight sweep, seed intervals."""

from __future__ import annotations


import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .style import MARKERS, PAGE_WIDTH, PALETTE, color, label



BEYOND_METRICS = {"frac_alive": "fraction alive", "explained_variance": "explained variance",
                  "ce_loss_score": "CE-loss score", "tpp_total_20": "TPP total at N=20"}


def _variant_color(name: str) -> str:
    n = name.lower()
    if "l2" in n:
        return PALETTE["topk+l2"]
    if "unit" in n or "learned" in n or "top-k only" in n:
        return PALETTE["vsae (text)"]
    return color("vsae" if n.startswith("vsae") else "topk")


def _identical_groups(values, tol: float = 1e-9) -> list[list[int]]:
    """Indices of bars whose values agree to ``tol`` (groups of two or more)."""
    v = np.asarray(values, dtype=float)
    groups, seen = [], set()
    for i in range(len(v)):
        if i in seen or not np.isfinite(v[i]):
            continue
        g = [j for j in range(i, len(v)) if j not in seen and np.isfinite(v[j]) and abs(v[j] - v[i]) <= tol]
        seen.update(g)
        if len(g) > 1:
            groups.append(g)
    return groups


def variant_bars(df: pd.DataFrame, names: list[str], title: str, metrics=tuple(BEYOND_METRICS), *, tol: float = 1e-9):
    """One panel per metric, one bar per variant (``df``: one row per variant, column ``sae``).

    Every bar carries its value, so that small differences are visible; bars that agree to ``tol``
    are bracketed as "identical", and a note under the figure names variants that agree on every
    metric (the two runs gave the same values).
    """
    import textwrap

    d = df.set_index("sae").loc[names]
    metrics = list(metrics)
    fig, axes = plt.subplots(1, len(metrics), figsize=(PAGE_WIDTH, 3.9))
    axes = np.atleast_1d(axes)
    for ax, m in zip(axes, metrics):
        vals = d[m].to_numpy(dtype=float)
        bars = ax.bar(range(len(names)), vals, color=[_variant_color(n) for n in names], width=0.7)
        ax.bar_label(bars, labels=[f"{v:.4f}" if np.isfinite(v) else "n/a" for v in vals], fontsize=7.5, padding=2)
        fin = vals[np.isfinite(vals)]
        top, bot = max(fin.max() if fin.size else 0.0, 0.0), min(fin.min() if fin.size else 0.0, 0.0)
        span = (top - bot) or 1.0
        groups = _identical_groups(vals, tol)
        ax.set_ylim(bot - (0.15 * span if bot < 0 else 0), top + (0.42 if groups else 0.15) * span)
        for g in groups:
            y = max(vals[g].max(), 0) + 0.2 * span
            ax.plot([g[0], g[0], g[-1], g[-1]], [y - 0.04 * span, y, y, y - 0.04 * span], color="#333", lw=1)
            ax.text((g[0] + g[-1]) / 2, y + 0.02 * span, "identical", ha="center", va="bottom", fontsize=8,
                    color="#333", fontweight="bold")
        ax.set_xticks(range(len(names)))
        wrap = max(8, int(33 / max(len(names), 1)))  # characters per line that fit one bar's slot
        ax.set_xticklabels(["\n".join(textwrap.wrap(n, wrap, break_long_words=False)) for n in names], fontsize=7.5)
        ax.set_ylabel(BEYOND_METRICS.get(m, m))
        ax.set_title(BEYOND_METRICS.get(m, m), fontsize=9.5)
        ax.axhline(0, color="#888", lw=0.8)
    same = []
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            a, b = d.iloc[i][metrics].to_numpy(dtype=float), d.iloc[j][metrics].to_numpy(dtype=float)
            if np.all(np.abs(a - b) <= tol):
                same.append((names[i], names[j]))
    fig.suptitle(title)
    if same:
        note = "; ".join(f"“{a}” and “{b}”" for a, b in same)
        fig.tight_layout(rect=(0, 0.07, 1, 1))
        fig.text(0.5, 0.01, "\n".join(textwrap.wrap(
            f"{note} gave identical values on all {len(metrics)} metrics (to {tol:g}): the runs produced the same numbers.",
            150)), ha="center", va="bottom", fontsize=8.5, color="#a02020")
    else:
        fig.tight_layout()
    return fig


def kl_sweep(df: pd.DataFrame, metrics=tuple(BEYOND_METRICS)):
    """Metrics against the KL weight (``df``: columns kl_coeff and the metrics); weight 0 drawn at the left."""
    d = df.sort_values("kl_coeff")
    pos = d["kl_coeff"].replace(0, np.nan)
    zero_x = (pos.min() / 10) if pos.notna().any() else 1e-3
    x = d["kl_coeff"].where(d["kl_coeff"] > 0, zero_x)
    fig, axes = plt.subplots(1, len(metrics), figsize=(PAGE_WIDTH * 1.2, 3.0))
    for ax, m in zip(np.atleast_1d(axes), metrics):
        ax.plot(x, d[m], marker="^", color=color("vsae"))
        ax.set_xscale("log")
        ax.set_xticks(list(x))
        ax.set_xticklabels(["0" if v == 0 else f"{v:g}" for v in d["kl_coeff"]], fontsize=8)
        ax.set_xlabel("KL weight β")
        ax.set_ylabel(BEYOND_METRICS.get(m, m))
        ax.set_title(BEYOND_METRICS.get(m, m), fontsize=9)
    fig.tight_layout()
    return fig


def seed_intervals(df: pd.DataFrame, metrics=tuple(BEYOND_METRICS)):
    """Mean and 95% t-interval over seeds per architecture (``df``: columns architecture and metrics)."""
    from ..stats import t_interval

    fig, axes = plt.subplots(1, len(metrics), figsize=(PAGE_WIDTH * 1.2, 3.0))
    for ax, m in zip(np.atleast_1d(axes), metrics):
        for i, (arch, g) in enumerate(df.groupby("architecture", sort=False)):
            v = g[m].to_numpy(dtype=float)
            mean, half, _ = t_interval(v)
            ax.errorbar(i, mean, yerr=np.nan_to_num(half), fmt=MARKERS.get(arch, "o"), color=color(arch), capsize=5, ms=8)
            ax.scatter(np.full(len(v), i + 0.15), v, color=color(arch), s=10, alpha=0.6)
        ax.set_xticks(range(df["architecture"].nunique()))
        ax.set_xticklabels([label(a) for a in df["architecture"].unique()], fontsize=8)
        ax.set_xlim(-0.5, df["architecture"].nunique() - 0.5)
        ax.set_ylabel(BEYOND_METRICS.get(m, m))
        ax.set_title(BEYOND_METRICS.get(m, m), fontsize=9)
    fig.tight_layout()
    return fig


def sigma_sweep(df: pd.DataFrame, d_in: int, reference: pd.Series | None = None, metrics=tuple(BEYOND_METRICS)):
    """Metrics of unit-variance-mode vSAEs against their sampling sigma (``df``: columns
    ``noise_scale`` and the metrics; log axis), with the vSAE that does not sample (``reference``, a
    row with the same metrics) as a dashed line and one input coordinate's RMS, 1/sqrt(d_in) in the
    SAE's normalised units, as a dotted line."""
    d = df.sort_values("noise_scale")
    fig, axes = plt.subplots(1, len(metrics), figsize=(PAGE_WIDTH * 1.2, 3.0))
    for ax, m in zip(np.atleast_1d(axes), metrics):
        ax.plot(d["noise_scale"], d[m], marker="D", color=PALETTE["vsae (text)"], label="samples z = μ + σε")
        if reference is not None:
            ax.axhline(float(reference[m]), color=color("vsae"), ls="--", lw=1, label="no sampling (z = μ)")
        ax.axvline(1 / np.sqrt(d_in), color="grey", ls=":", lw=1, label="RMS of one input coordinate")
        ax.set_xscale("log")
        ax.set_xticks(list(d["noise_scale"]))
        ax.set_xticklabels([f"{v:g}" for v in d["noise_scale"]], fontsize=8)
        ax.set_xlabel("sampling σ (normalised input units)")
        ax.set_ylabel(BEYOND_METRICS.get(m, m))
        ax.set_title(BEYOND_METRICS.get(m, m), fontsize=9)
    np.atleast_1d(axes)[0].legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig

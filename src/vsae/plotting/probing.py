"""Figure of chapter 5: sparse-probing accuracy against k, per probe k."""

from __future__ import annotations


import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .style import MARKERS, PAGE_WIDTH, _log2_k_axis, _spread_labels, _zoom_y, color, label



def _paper_wide(paper: pd.DataFrame | None) -> pd.DataFrame | None:
    """The paper's tidy rows as one row per (architecture, k) with a column per metric."""
    if paper is None or not len(paper):
        return None
    return paper.pivot_table(index=["architecture", "k"], columns="metric", values="value").reset_index()


def probing_2x2(summary: pd.DataFrame, probe_ks=(1, 2, 5), paper: pd.DataFrame | None = None):
    """The paper's sparse-probing figure from a per-SAE summary.

    (Long on purpose: the four panels share their axis limits, zoom and label placement, which is
    what makes the figure readable; each panel's block is commented.)

    ``summary``: one row per SAE with architecture, sae_k, sae_test_accuracy, llm_test_accuracy,
    preservation, and sae_top_{k}_test_accuracy / top_{k}_preservation for k in ``probe_ks``. Rows of
    the same (architecture, sae_k) are seeds: drawn as their mean, with 95% t-intervals as error bars.
    ``paper``: the paper's tidy values (``paper.paper_results("sparse_probing")``: metric,
    architecture, k, value), drawn as open markers on dashed lines. Every y-axis is zoomed to the
    values drawn (accuracies differ in the second decimal; a 0–1 axis would hide that).
    """
    from ..stats import t_interval

    num = [c for c in summary.columns if c not in ("sae", "architecture", "sae_k", "seed", "dataset")
           and pd.api.types.is_numeric_dtype(summary[c])]
    runs = summary.assign(degradation=summary["llm_test_accuracy"] - summary["sae_test_accuracy"])
    halves = {(a, k): {c: t_interval(g[c])[1] for c in num + ["degradation"]}
              for (a, k), g in runs.groupby(["architecture", "sae_k"], sort=False)}
    summary = runs.groupby(["architecture", "sae_k"], sort=False)[num + ["degradation"]].mean().reset_index()
    summary["sae"] = [f"{label(a)} k={int(k)}" for a, k in zip(summary["architecture"], summary["sae_k"])]
    pw = _paper_wide(paper)
    if pw is not None and {"sae_test_accuracy", "preservation"} <= set(pw.columns):
        pw["llm_test_accuracy"] = pw["sae_test_accuracy"] / pw["preservation"]
        pw["degradation"] = pw["llm_test_accuracy"] - pw["sae_test_accuracy"]
    paper_note = " (paper, Pythia-70M)"
    fig, axes = plt.subplots(2, 2, figsize=(PAGE_WIDTH, 8.0))

    # (a) SAE against LLM accuracy
    ax = axes[0, 0]
    pts, xs_all, ys_all = [], [], []
    for arch, g in summary.groupby("architecture", sort=False):
        ax.scatter(g["llm_test_accuracy"], g["sae_test_accuracy"], color=color(arch), marker=MARKERS.get(arch, "o"),
                   s=50, label=f"{label(arch)} (ours, seed mean; bars: 95% CI)", zorder=3)
        pts += [(r["llm_test_accuracy"], r["sae_test_accuracy"], f"k={int(r['sae_k'])}", color(arch)) for _, r in g.iterrows()]
        xs_all += list(g["llm_test_accuracy"])
        ys_all += list(g["sae_test_accuracy"])
    if pw is not None and "llm_test_accuracy" in pw:
        for arch, g in pw.groupby("architecture", sort=False):
            g = g.sort_values("k")
            ax.plot(g["llm_test_accuracy"], g["sae_test_accuracy"], ls="--", marker=MARKERS.get(arch, "o"), mfc="none",
                    color=color(arch), alpha=0.75, lw=0.8, label=f"{label(arch)}{paper_note}")
            pts += [(r["llm_test_accuracy"], r["sae_test_accuracy"], f"k={int(r['k'])}", color(arch), -1)
                    for _, r in g.iterrows()]
            xs_all += list(g["llm_test_accuracy"])
            ys_all += list(g["sae_test_accuracy"])
    lo = float(min(min(xs_all), min(ys_all)))
    hi = float(max(max(xs_all), max(ys_all)))
    span = max(hi - lo, 0.005)
    lo, hi = lo - 0.15 * span, hi + 0.15 * span
    ax.plot([lo, hi], [lo, hi], ls="--", color="#888", lw=1, label="perfect preservation (SAE = LLM)", zorder=1)
    ax.set_xlim(lo - 0.1 * span, hi + 0.2 * span)  # room for the k labels (ours right, paper left)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("LLM probe test accuracy (all residual dims)")
    ax.set_ylabel("SAE probe test accuracy (all latents)")
    ax.set_title("SAE vs LLM probe accuracy (labels: SAE k)")

    # (b) mean preservation over the SAE's k, per architecture: points, so the axis can zoom
    ax = axes[0, 1]
    cols = ["preservation"] + [f"top_{k}_preservation" for k in probe_ks]
    names = ["all latents"] + [f"top-{k}" for k in probe_ks]
    archs = list(summary["architecture"].unique())
    n_series = len(archs) * (2 if pw is not None else 1)
    step = 0.7 / max(n_series, 1)
    vals = []
    j = 0
    for arch in archs:
        r = runs[runs.architecture == arch]
        seeds = r.groupby("seed")[cols].mean() if "seed" in r else r[cols].mean().to_frame().T
        ci = [t_interval(seeds[c]) for c in cols]
        m = [c_[0] for c_ in ci]
        h = [np.nan_to_num(c_[1]) for c_ in ci]
        x = np.arange(len(cols)) - 0.35 + step * (j + 0.5)
        ax.errorbar(x, m, yerr=h, fmt=MARKERS.get(arch, "o"), color=color(arch), ms=8, capsize=3, lw=1.3,
                    label=f"{label(arch)} (ours)")
        for xi, mi, hi_ in zip(x, m, h):
            ax.annotate(f"{mi:.3f}", (xi, mi + hi_), textcoords="offset points", xytext=(0, 3), ha="center",
                        va="bottom", fontsize=7, color=color(arch))
        vals += list(np.array(m) - np.array(h)) + list(np.array(m) + np.array(h))
        j += 1
        if pw is not None:
            g = pw[pw.architecture == arch]
            pm = [g[c].mean() if c in g else np.nan for c in cols]
            x = np.arange(len(cols)) - 0.35 + step * (j + 0.5)
            ax.plot(x, pm, ls="none", marker=MARKERS.get(arch, "o"), mfc="none", color=color(arch), ms=8, mew=1.4,
                    alpha=0.8, label=f"{label(arch)}{paper_note}")
            vals += pm
            j += 1
    ax.axhline(1.0, ls="--", color="#888", lw=1)
    _zoom_y(ax, vals, pad=0.15)
    ax.set_xticks(np.arange(len(cols)))
    ax.set_xticklabels(names)
    ax.set_xlabel("latents used by the probe")
    ax.set_ylabel("accuracy preservation (SAE / LLM),\nmean over the SAE's k")
    ax.set_title("Mean preservation (dashed: 1 = no loss)")

    # (c) top-k probe accuracy against the number of latents
    ax = axes[1, 0]
    ks = sorted(summary["sae_k"].unique())
    n_rows = len(summary)
    vals = []
    for i, (_, r) in enumerate(summary.iterrows()):
        shade = 0.35 + 0.65 * (ks.index(r["sae_k"]) + 1) / len(ks)
        h = halves[(r["architecture"], r["sae_k"])]
        dodge = 0.05 * (i - (n_rows - 1) / 2)  # side by side, so the error bars do not overlap
        y = [r[f"sae_top_{k}_test_accuracy"] for k in probe_ks]
        e = [np.nan_to_num(h[f"sae_top_{k}_test_accuracy"]) for k in probe_ks]
        ax.errorbar(np.asarray(probe_ks, dtype=float) + dodge, y, yerr=e, capsize=2,
                    marker=MARKERS.get(r["architecture"], "o"), color=color(r["architecture"]), alpha=shade,
                    label=f"{r['sae']} (ours)")
        vals += list(np.add(y, e)) + list(np.subtract(y, e))
    if pw is not None:
        for arch, g in pw.groupby("architecture", sort=False):
            y = [g[f"sae_top_{k}_test_accuracy"].mean() if f"sae_top_{k}_test_accuracy" in g else np.nan for k in probe_ks]
            ax.plot(list(probe_ks), y, ls="--", marker=MARKERS.get(arch, "o"), mfc="none", color=color(arch), alpha=0.8,
                    label=f"{label(arch)} (paper, mean over k)")
            vals += y
    _zoom_y(ax, vals, pad=0.08)
    ax.set_xticks(list(probe_ks))
    ax.set_xlabel("latents used by the probe")
    ax.set_ylabel("SAE top-k probe test accuracy")
    ax.set_title("Top-k sparse probing")
    from matplotlib.lines import Line2D

    kk = ", ".join(str(int(k)) for k in ks)
    hs = [Line2D([], [], color=color(a), marker=MARKERS.get(a, "o"), label=f"{label(a)} (ours; k = {kk}, light → dark)")
          for a in archs]
    if pw is not None:
        hs += [Line2D([], [], color=color(a), marker=MARKERS.get(a, "o"), mfc="none", ls="--", alpha=0.8,
                      label=f"{label(a)} (paper, mean over k)") for a in archs]
    ax.legend(handles=hs, fontsize=7.5, loc="best")

    # (d) accuracy lost against the SAE's k
    ax = axes[1, 1]
    vals = [0.0]
    for arch, g in summary.groupby("architecture", sort=False):
        g = g.sort_values("sae_k")
        e = [np.nan_to_num(halves[(arch, k)]["degradation"]) for k in g["sae_k"]]
        ax.errorbar(g["sae_k"], g["degradation"], yerr=e, capsize=3, marker=MARKERS.get(arch, "o"), color=color(arch),
                    label=f"{label(arch)} (ours)")
        vals += list(g["degradation"] + e) + list(g["degradation"] - e)
    if pw is not None and "degradation" in pw:
        for arch, g in pw.groupby("architecture", sort=False):
            g = g.sort_values("k")
            ax.plot(g["k"], g["degradation"], ls="--", marker=MARKERS.get(arch, "o"), mfc="none", color=color(arch),
                    alpha=0.8, label=f"{label(arch)}{paper_note}")
            vals += list(g["degradation"])
    _log2_k_axis(ax, list(summary["sae_k"]) + ([] if pw is None else list(pw["k"])))
    ax.axhline(0, ls="--", color="#888", lw=1)
    _zoom_y(ax, vals, pad=0.1)
    ax.set_xlabel("SAE k (active latents per token)")
    ax.set_ylabel("LLM − SAE probe test accuracy\n(all dims / latents)")
    ax.set_title("Accuracy degradation (0 = no loss)")
    handles, labels_ = axes[0, 0].get_legend_handles_labels()  # the same series in (a), (b) and (d): one legend
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    fig.legend(handles, labels_, loc="upper center", ncol=min(len(handles), 3), fontsize=8.5, frameon=False,
               bbox_to_anchor=(0.5, 1.0))
    _spread_labels(axes[0, 0], pts)  # after the layout: the offsets are in points
    return fig

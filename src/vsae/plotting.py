"""Figures of the book: one palette for TopK and vSAE, labelled axes, legible at page width.

Every function returns a matplotlib ``Figure``; :func:`savefig` also writes it as a PNG beside the
executed chapter (``figures/<name>.png``). Paper values, where drawn, are open markers on dashed lines.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

#: the book's palette: TopK in blue, vSAE in magenta (as in the paper's figures), controls in greys/greens
PALETTE = {
    "topk": "#1f6fb4",
    "vsae": "#c2186b",
    "topk+l2": "#2a9d55",
    "vsae (text)": "#e08a1e",
}
MARKERS = {"topk": "o", "vsae": "^", "topk+l2": "s", "vsae (text)": "D"}
LABELS = {"topk": "TopK SAE", "vsae": "vSAE (TopK)"}
PAGE_WIDTH = 11.0  # inches: a full-width figure in the book theme


def setup() -> None:
    """Seaborn theme used by every chapter."""
    sns.set_theme(context="notebook", style="whitegrid", font_scale=0.95)
    plt.rcParams.update({"figure.dpi": 100, "savefig.dpi": 150, "axes.titlesize": 11, "axes.labelsize": 10,
                         "legend.fontsize": 9, "figure.max_open_warning": 0})


def color(arch: str) -> str:
    return PALETTE.get(arch, "#555555")


def label(arch: str) -> str:
    return LABELS.get(arch, arch)


def savefig(fig, name: str, folder: str | Path = "figures") -> None:
    """Save ``fig`` as ``<folder>/<name>.png`` (relative to the executing chapter), show it, close it.

    Returns nothing, so that a cell ending with it shows only the figure.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    fig.savefig(path, bbox_inches="tight")
    try:  # in a notebook: show it once, then close it so the inline backend does not show it again
        from IPython import get_ipython
        from IPython.display import display

        if get_ipython() is not None:
            display(fig)
    except ImportError:  # pragma: no cover
        pass
    plt.close(fig)


def _log2_k_axis(ax, ks: Iterable[int]) -> None:
    ks = sorted(set(int(k) for k in ks))
    ax.set_xscale("log", base=2)
    ax.set_xticks(ks)
    ax.set_xticklabels([str(k) for k in ks])


# --------------------------------------------------------------------------------------------- #
# Chapter 1: architecture
# --------------------------------------------------------------------------------------------- #
def architecture_diagram():
    """Side-by-side block diagram of the TopK SAE and the vSAE, as trained by the authors' code."""
    fig, axes = plt.subplots(1, 2, figsize=(PAGE_WIDTH, 3.6))
    specs = [
        ("topk", "TopK SAE", [
            ("x", "residual\nactivation x"),
            ("enc", "a = ReLU(W_encᵀ(x − b_dec) + b_enc)"),
            ("sparse", "f = TopK(a, k)"),
            ("dec", "x̂ = W_decᵀ f + b_dec\n(unit-norm decoder rows)"),
        ], "loss = ‖x − x̂‖² + α·AuxK"),
        ("vsae", "variational TopK SAE", [
            ("x", "residual\nactivation x"),
            ("enc", "μ = ReLU(W_encᵀ x + b_enc)\nz = μ (+ σ·ε in training, text)"),
            ("sparse", "s = TopK(|z|, k), sign kept"),
            ("dec", "x̂ = W_decᵀ s + b_dec\n(decoder unconstrained)"),
        ], "loss = ‖x − x̂‖² + β(t)·½Σᵢ zᵢ²  (all latents)"),
    ]
    for ax, (arch, title, boxes, loss) in zip(axes, specs):
        ax.set_xlim(0, 10)
        ax.set_ylim(0, 5)
        ax.axis("off")
        ax.set_title(title, color=color(arch), fontweight="bold")
        xs = [0.9, 3.6, 6.3, 8.9]
        for i, ((key, text), x0) in enumerate(zip(boxes, xs)):
            w = 1.6 if key == "x" else 2.5
            face = "#f2f2f2" if key == "x" else matplotlib.colors.to_rgba(color(arch), 0.12)
            ax.add_patch(matplotlib.patches.FancyBboxPatch((x0 - w / 2, 2.0), w, 1.6, boxstyle="round,pad=0.08",
                                                           fc=face, ec=color(arch) if key != "x" else "#777"))
            ax.text(x0, 2.8, text, ha="center", va="center", fontsize=7.6)
            if i:
                ax.annotate("", xy=(x0 - w / 2 - 0.05, 2.8), xytext=(xs[i - 1] + (0.8 if i == 1 else 1.25) + 0.05, 2.8),
                            arrowprops=dict(arrowstyle="->", color="#444"))
        if arch == "vsae":  # the Gaussian spread of each latent in the blog post's picture
            g = np.linspace(-3, 3, 60)
            for j, off in enumerate((0.55, 0.95, 1.35)):
                ax.plot(3.6 + 0.35 * g, 0.9 + 0.45 * np.exp(-g ** 2 / 2) + 0.0 * off, color=color(arch), alpha=0.25 + 0.2 * j)
            ax.text(3.6, 0.45, "Gaussian posterior per latent (text);\nfixed variance, no sampling (code)",
                    ha="center", fontsize=7.2, color="#444")
        ax.text(5.0, 4.45, loss, ha="center", fontsize=8.6)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------- #
# Chapter 2: activations
# --------------------------------------------------------------------------------------------- #
def activation_norms(norms: np.ndarray, norm_factor: float, hook: str):
    """Histogram of per-token residual L2 norms with the normalisation factor marked."""
    fig, ax = plt.subplots(figsize=(PAGE_WIDTH * 0.6, 3.2))
    sns.histplot(norms, bins=80, ax=ax, color="#555")
    ax.axvline(norm_factor, color="#c0392b", ls="--", label=f"normalisation factor √E‖x‖² = {norm_factor:.2f}")
    ax.set_xlabel(f"‖x‖₂ of the residual at {hook} (activation units)")
    ax.set_ylabel("tokens")
    ax.legend()
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------- #
# Chapter 3: training curves
# --------------------------------------------------------------------------------------------- #
def training_curves(logs: pd.DataFrame, columns=("loss", "mse", "kl", "l0", "frac_dead")):
    """One panel per logged quantity against tokens seen; one line per (architecture, k), averaged
    over seeds when ``logs`` holds several (colour = architecture, shade = k).

    ``logs`` has columns run, architecture, k, tokens (or step) and the logged quantities.
    """
    ylabels = {"loss": "total loss", "mse": "MSE (sum over dims, normalised units)", "kl": "KL term (nats)",
               "auxk": "AuxK loss", "l0": "L0 (active latents / token)", "frac_dead": "fraction of dead latents", "frac_inactive": "fraction inactive (last 100k tokens)",
               "lr": "learning rate"}
    cols = [c for c in columns if c in logs.columns]
    fig, axes = plt.subplots(1, len(cols), figsize=(PAGE_WIDTH * 1.25, 3.2))
    axes = np.atleast_1d(axes)
    x = "tokens" if "tokens" in logs.columns else "step"
    ks = sorted(logs["k"].unique())
    for ax, c in zip(axes, cols):
        for (arch, k), g in logs.groupby(["architecture", "k"]):
            shade = 0.35 + 0.65 * (ks.index(k) + 1) / len(ks)
            g = g.groupby(x, as_index=False)[c].mean()  # mean over seeds (one row per run and step)
            ax.plot(g[x], g[c], color=color(arch), alpha=shade, lw=1.2, label=f"{label(arch)} k={k}")
        ax.set_xlabel("training tokens" if x == "tokens" else "step")
        ax.set_ylabel(ylabels.get(c, c))
        if c in ("loss", "mse") and (logs[c] > 0).all():
            ax.set_yscale("log")
    handles, labels_ = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels_, loc="lower center", ncol=min(8, len(labels_)), bbox_to_anchor=(0.5, -0.12), fontsize=8)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------- #
# Chapter 4: core metrics
# --------------------------------------------------------------------------------------------- #
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
    from .stats import seed_summary

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


# --------------------------------------------------------------------------------------------- #
# Chapter 5: sparse probing
# --------------------------------------------------------------------------------------------- #
def probing_2x2(summary: pd.DataFrame, probe_ks=(1, 2, 5)):
    """The paper's sparse-probing figure from a per-SAE summary.

    ``summary``: one row per SAE with architecture, sae_k, sae_test_accuracy, llm_test_accuracy,
    preservation, and sae_top_{k}_test_accuracy / top_{k}_preservation for k in ``probe_ks``. Rows of
    the same (architecture, sae_k) are seeds: drawn as their mean, with 95% t-intervals as error bars
    in the top-k and degradation panels.
    """
    from .stats import t_interval

    num = [c for c in summary.columns if c not in ("sae", "architecture", "sae_k", "seed", "dataset")
           and pd.api.types.is_numeric_dtype(summary[c])]
    runs = summary.assign(degradation=summary["llm_test_accuracy"] - summary["sae_test_accuracy"])
    halves = {(a, k): {c: t_interval(g[c])[1] for c in num + ["degradation"]}
              for (a, k), g in runs.groupby(["architecture", "sae_k"], sort=False)}
    summary = runs.groupby(["architecture", "sae_k"], sort=False)[num + ["degradation"]].mean().reset_index()
    summary["sae"] = [f"{label(a)} k={int(k)}" for a, k in zip(summary["architecture"], summary["sae_k"])]
    fig, axes = plt.subplots(2, 2, figsize=(PAGE_WIDTH, 7.2))
    ax = axes[0, 0]
    for arch, g in summary.groupby("architecture", sort=False):
        ax.scatter(g["llm_test_accuracy"], g["sae_test_accuracy"], color=color(arch), marker=MARKERS.get(arch, "o"),
                   s=50, label=label(arch))
        for _, r in g.iterrows():
            ax.annotate(f"k={int(r['sae_k'])}", (r["llm_test_accuracy"], r["sae_test_accuracy"]), fontsize=7,
                        textcoords="offset points", xytext=(4, 2), color=color(arch))
    lo = float(min(summary["llm_test_accuracy"].min(), summary["sae_test_accuracy"].min())) - 0.01
    hi = float(max(summary["llm_test_accuracy"].max(), summary["sae_test_accuracy"].max())) + 0.01
    ax.plot([lo, hi], [lo, hi], ls="--", color="#888", label="perfect preservation")
    ax.set_xlabel("LLM probe accuracy (all dims)")
    ax.set_ylabel("SAE probe accuracy (all latents)")
    ax.set_title("SAE vs LLM probe accuracy")
    ax.legend(fontsize=8)

    ax = axes[0, 1]
    cols = ["preservation"] + [f"top_{k}_preservation" for k in probe_ks]
    names = ["overall"] + [f"top-{k}" for k in probe_ks]
    archs = list(summary["architecture"].unique())
    width = 0.8 / len(archs)
    for i, arch in enumerate(archs):
        g = summary[summary.architecture == arch]
        ax.bar(np.arange(len(cols)) + i * width, [g[c].mean() for c in cols], width, color=color(arch), label=label(arch))
    ax.axhline(1.0, ls="--", color="#888")
    ax.set_xticks(np.arange(len(cols)) + width * (len(archs) - 1) / 2)
    ax.set_xticklabels(names)
    ax.set_ylabel("accuracy preservation (SAE / LLM), mean over k")
    ax.set_title("Mean preservation")
    ax.legend(fontsize=8)

    ax = axes[1, 0]
    ks = sorted(summary["sae_k"].unique())
    n_rows = len(summary)
    for i, (_, r) in enumerate(summary.iterrows()):
        shade = 0.35 + 0.65 * (ks.index(r["sae_k"]) + 1) / len(ks)
        h = halves[(r["architecture"], r["sae_k"])]
        dodge = 0.05 * (i - (n_rows - 1) / 2)  # side by side, so the error bars do not overlap
        ax.errorbar(np.asarray(probe_ks, dtype=float) + dodge, [r[f"sae_top_{k}_test_accuracy"] for k in probe_ks],
                    yerr=[np.nan_to_num(h[f"sae_top_{k}_test_accuracy"]) for k in probe_ks], capsize=2,
                    marker=MARKERS.get(r["architecture"], "o"), color=color(r["architecture"]), alpha=shade, label=r["sae"])
    ax.set_xticks(list(probe_ks))
    ax.set_xlabel("latents used by the probe")
    ax.set_ylabel("SAE top-k probe test accuracy")
    ax.set_title("Top-k sparse probing")
    ax.legend(fontsize=7, ncol=2)

    ax = axes[1, 1]
    for arch, g in summary.groupby("architecture", sort=False):
        g = g.sort_values("sae_k")
        ax.errorbar(g["sae_k"], g["degradation"], yerr=[np.nan_to_num(halves[(arch, k)]["degradation"]) for k in g["sae_k"]],
                    capsize=3, marker=MARKERS.get(arch, "o"), color=color(arch), label=label(arch))
    _log2_k_axis(ax, summary["sae_k"])
    ax.axhline(0, ls="--", color="#888")
    ax.set_xlabel("SAE k (active latents per token)")
    ax.set_ylabel("LLM − SAE accuracy (all dims)")
    ax.set_title("Accuracy degradation")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------- #
# Chapters 6 and 7: SCR and TPP
# --------------------------------------------------------------------------------------------- #
def _vs_threshold(ax, df: pd.DataFrame, y: str, ls="-", paper: pd.DataFrame | None = None, paper_metric=None,
                  legend_suffix=""):
    ks = sorted(df["sae_k"].unique())
    for (arch, k), g in df.groupby(["architecture", "sae_k"], sort=False):
        g = _mean_half(g, "n", y)  # mean over seeds, 95% band
        shade = 0.45 + 0.55 * (ks.index(k) + 1) / len(ks)
        ax.plot(g["n"], g["mean"], ls=ls, marker=MARKERS.get(arch, "o"), color=color(arch), alpha=shade,
                label=f"{label(arch)} k={k}{legend_suffix}")
        _band(ax, g["n"], g["mean"], g["half"], color(arch))
    if paper is not None:
        pg = paper[paper.metric == paper_metric]
        for (arch, k), g in pg.groupby(["architecture", "k"], sort=False):
            g = g.sort_values("n_ablated")
            ax.plot(g["n_ablated"], g["value"], ls=":", marker=MARKERS.get(arch, "o"), mfc="none", color=color(arch),
                    alpha=0.6, label=f"{label(arch)} k={k} (paper)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("latents ablated N")


def _heatmap(ax, df: pd.DataFrame, y: str, title: str):
    """Mean over seeds of ``y`` per (architecture, k) row and N column."""
    df = df.assign(row=[f"{label(a)} k={int(k)}" for a, k in zip(df["architecture"], df["sae_k"])])
    piv = df.pivot_table(index="row", columns="n", values=y, aggfunc="mean")
    order = [s for s in df["row"].unique() if s in piv.index]
    piv = piv.loc[order]
    piv.columns = [int(c) for c in piv.columns]
    sns.heatmap(piv, ax=ax, annot=True, fmt=".2f", cmap="RdBu_r", center=0, cbar=False, annot_kws={"fontsize": 7})
    ax.set_xlabel("latents ablated N")
    ax.set_ylabel("")
    ax.set_title(title)


def scr_1x4(scr_all: pd.DataFrame, paper: pd.DataFrame | None = None):
    """SCR metric, direction 1 and direction 2 against N, and a heatmap of the metric.

    ``scr_all``: the ``pair == "ALL"`` rows (sae, architecture, sae_k, n, scr_metric, scr_dir1, scr_dir2), ``n``
    being the number of latents ablated.
    """
    fig, axes = plt.subplots(1, 4, figsize=(PAGE_WIDTH * 1.35, 3.6), gridspec_kw={"width_ratios": [1, 1, 1, 1.3]})
    _vs_threshold(axes[0], scr_all, "scr_metric", paper=paper, paper_metric="scr_metric")
    axes[0].set_ylabel("SCR metric (normalised recovery)")
    axes[0].set_title("SCR metric")
    _vs_threshold(axes[1], scr_all, "scr_dir1")
    axes[1].set_ylabel("SCR, ablate spurious-attributed latents")
    axes[1].set_title("Direction 1")
    _vs_threshold(axes[2], scr_all, "scr_dir2")
    axes[2].set_ylabel("SCR, ablate target-attributed latents")
    axes[2].set_title("Direction 2")
    for a in axes[:3]:
        a.axhline(0, color="#888", lw=0.8)
    _heatmap(axes[3], scr_all, "scr_metric", "SCR metric")
    handles, labels_ = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels_, loc="lower center", ncol=6, bbox_to_anchor=(0.5, -0.16), fontsize=8)
    fig.tight_layout()
    return fig


def tpp_1x4(tpp_all: pd.DataFrame, paper: pd.DataFrame | None = None):
    """TPP total against N, intended (solid) vs unintended (dashed), selectivity, and a heatmap.

    ``tpp_all``: mean-over-classes rows (sae, architecture, sae_k, n, tpp_total, tpp_intended, tpp_unintended).
    """
    fig, axes = plt.subplots(1, 4, figsize=(PAGE_WIDTH * 1.35, 3.6), gridspec_kw={"width_ratios": [1, 1, 1, 1.3]})
    _vs_threshold(axes[0], tpp_all, "tpp_total", paper=paper, paper_metric="tpp_total")
    axes[0].set_ylabel("TPP total (intended − unintended)")
    axes[0].set_title("TPP metric")
    _vs_threshold(axes[1], tpp_all, "tpp_intended")
    _vs_threshold(axes[1], tpp_all, "tpp_unintended", ls="--", legend_suffix=" (unintended)")
    axes[1].set_ylabel("accuracy drop")
    axes[1].set_title("Intended (solid) vs unintended (dashed)")
    sel = tpp_all.assign(selectivity=tpp_all["tpp_intended"] / tpp_all["tpp_unintended"].abs().clip(lower=1e-3))
    _vs_threshold(axes[2], sel, "selectivity")
    axes[2].set_yscale("log")
    axes[2].set_ylabel("selectivity: intended / |unintended|")
    axes[2].set_title("Selectivity")
    _heatmap(axes[3], tpp_all, "tpp_total", "TPP total")
    handles, labels_ = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels_, loc="lower center", ncol=6, bbox_to_anchor=(0.5, -0.16), fontsize=8)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------- #
# Chapter 8: feature interpretability
# --------------------------------------------------------------------------------------------- #
def latent_summary(stats: dict[str, pd.DataFrame], arch_of: dict[str, str]):
    """Per SAE: firing density against max activation of every alive latent, and decoder norms."""
    fig, axes = plt.subplots(1, 2, figsize=(PAGE_WIDTH, 3.4))
    for name, s in stats.items():
        a = s[s["n_fires"] > 0]
        axes[0].scatter(a["density"], a["max_activation"], s=5, alpha=0.4, color=color(arch_of[name]),
                        label=f"{name} ({len(a)} alive)")
        dn = s["decoder_norm"].to_numpy()
        lo, hi = float(dn.min()), float(dn.max())
        bins = np.linspace(lo - 0.01 * max(abs(lo), 1e-3), hi + 0.01 * max(abs(hi), 1e-3), 51)
        axes[1].hist(dn, bins=bins, alpha=0.6, color=color(arch_of[name]), label=name)
    axes[0].set_xscale("log")
    axes[0].set_xlabel("firing density on evaluation tokens (log)")
    axes[0].set_ylabel("max activation")
    axes[0].set_title("Alive latents")
    axes[0].legend(fontsize=8, markerscale=3)
    axes[1].set_xlabel("decoder row norm")
    axes[1].set_ylabel("latents")
    axes[1].set_title("Decoder norms")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    return fig


def feature_pair(rep_a, rep_b, arch_a: str, arch_b: str):
    """Side-by-side panels of two comparable latents: activation histogram, logit effects, synthetic run."""
    fig, axes = plt.subplots(2, 3, figsize=(PAGE_WIDTH * 1.15, 5.6))
    for row, (rep, arch) in enumerate(((rep_a, arch_a), (rep_b, arch_b))):
        ax = axes[row, 0]
        h = rep.histogram
        if len(h):
            ax.bar(h["bin_left"], h["count"], width=(h["bin_right"] - h["bin_left"]), align="edge", color=color(arch))
        st = rep.stats
        ax.set_title(f"{rep.sae} #{rep.latent}: density {st['density']:.4f}", fontsize=9)
        ax.set_xlabel("activation when firing")
        ax.set_ylabel("tokens")
        ax.text(0.98, 0.95, f"mean {st['mean_activation']:.3f}\nmax {st['max_activation']:.3f}\n"
                f"decoder norm {st['decoder_norm']:.3f}", transform=ax.transAxes, ha="right", va="top", fontsize=8,
                bbox=dict(fc="white", ec="#ccc"))
        ax = axes[row, 1]
        le = rep.logit_effects
        le = pd.concat([le[le.direction == "boosted"].head(5), le[le.direction == "suppressed"].head(5)])
        ax.barh(np.arange(len(le)), le["effect"], color=[color(arch) if e > 0 else "#999" for e in le["effect"]])
        ax.set_yticks(np.arange(len(le)))
        ax.set_yticklabels([repr(t)[1:-1][:14] for t in le["token"]], fontsize=7.5)
        ax.invert_yaxis()
        ax.set_xlabel("logit effect (decoder row · W_U)")
        ax.set_title("Top boosted / suppressed tokens", fontsize=9)
        ax = axes[row, 2]
        if rep.synthetic is not None:
            hist = rep.synthetic.history
            ax.plot(hist["step"], hist["soft_activation"], color=color(arch), label="latent activation (soft tokens)")
            ax.axhline(st["max_activation"], ls="--", color="#555", label="max on real text")
            ax.set_xlabel("optimisation step")
            ax.set_ylabel("mean activation over 64 positions")
            ax.set_title(f"Synthetic maximiser (hard tokens: max {rep.synthetic.max_activation:.2f})", fontsize=9)
            ax.legend(fontsize=7)
        else:
            ax.axis("off")
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------- #
# Chapter 9: latent space
# --------------------------------------------------------------------------------------------- #
def token_tsne_panels(emb: dict[str, pd.DataFrame], arch_of: dict[str, str]):
    """Token-space t-SNE per SAE: scatter coloured by L0 within kept latents, and a hexbin density."""
    fig, axes = plt.subplots(2, len(emb), figsize=(PAGE_WIDTH, 8.0), squeeze=False)
    for j, (name, df) in enumerate(emb.items()):
        ax = axes[0, j]
        sc = ax.scatter(df["x"], df["y"], c=df.get("l0", None), s=2, cmap="viridis", alpha=0.7)
        if "l0" in df:
            fig.colorbar(sc, ax=ax, label="active kept latents")
        ax.set_title(f"{name}: {len(df):,} tokens", color=color(arch_of[name]))
        ax.set_xlabel("t-SNE 1")
        ax.set_ylabel("t-SNE 2")
        ax = axes[1, j]
        hb = ax.hexbin(df["x"], df["y"], gridsize=40, cmap="magma", mincnt=1)
        fig.colorbar(hb, ax=ax, label="tokens per cell")
        ax.set_xlabel("t-SNE 1")
        ax.set_ylabel("t-SNE 2")
        ax.set_title("density")
    fig.tight_layout()
    return fig


def feature_tsne_panels(feat: pd.DataFrame, name: str, arch: str):
    """The paper's 1×4 feature-space figure for one SAE: clusters, utilisation, activation, per-cluster use."""
    fig, axes = plt.subplots(1, 4, figsize=(PAGE_WIDTH * 1.3, 3.4))
    ax = axes[0]
    sc = ax.scatter(feat["x"], feat["y"], c=feat["cluster"], cmap="tab10", s=8)
    ax.set_title(f"{name}: {len(feat)} latents, k-means clusters", fontsize=9, color=color(arch))
    ax = axes[1]
    sc = ax.scatter(feat["x"], feat["y"], c=np.log10(feat["utilization"].clip(lower=1e-6)), cmap="viridis", s=8)
    fig.colorbar(sc, ax=ax, label="log10 utilisation")
    ax.set_title("utilisation (firing density)", fontsize=9)
    ax = axes[2]
    sc = ax.scatter(feat["x"], feat["y"], c=feat["mean_activation"], s=4 + 400 * feat["utilization"], cmap="plasma", alpha=0.7)
    fig.colorbar(sc, ax=ax, label="mean activation when firing")
    ax.set_title("activation (size = utilisation)", fontsize=9)
    for a in axes[:3]:
        a.set_xlabel("t-SNE 1")
        a.set_ylabel("t-SNE 2")
    ax = axes[3]
    cu = feat.groupby("cluster").agg(n=("latent", "size"), u=("utilization", "mean")).reset_index()
    ax.bar(cu["cluster"].astype(str), cu["u"], color=color(arch))
    for _, r in cu.iterrows():
        ax.text(str(int(r["cluster"])), r["u"], f"n={int(r['n'])}", ha="center", va="bottom", fontsize=7)
    ax.set_xlabel("cluster")
    ax.set_ylabel("mean utilisation")
    ax.set_title("utilisation per cluster", fontsize=9)
    fig.tight_layout()
    return fig


def cosine_distributions(hists: dict[str, pd.DataFrame], arch_of: dict[str, str]):
    """Distribution of pairwise decoder cosine similarities among alive latents, per SAE."""
    fig, ax = plt.subplots(figsize=(PAGE_WIDTH * 0.7, 3.4))
    ks = sorted({n for n in hists})
    for name, h in hists.items():
        centers = (h["bin_left"] + h["bin_right"]) / 2
        dens = h["count"] / max(h["count"].sum(), 1) / (h["bin_right"] - h["bin_left"])
        ax.plot(centers, dens, color=color(arch_of[name]), alpha=0.4 + 0.6 * (ks.index(name) + 1) / len(ks), label=name)
    ax.set_yscale("log")
    ax.set_xlabel("cosine similarity between decoder rows of alive latents")
    ax.set_ylabel("probability density (log)")
    ax.set_title("Feature independence")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------- #
# Chapter 11: beyond the paper
# --------------------------------------------------------------------------------------------- #
BEYOND_METRICS = {"frac_alive": "fraction alive", "explained_variance": "explained variance",
                  "ce_loss_score": "CE-loss score", "tpp_total_20": "TPP total at N=20"}


def _variant_color(name: str) -> str:
    n = name.lower()
    if "l2" in n:
        return PALETTE["topk+l2"]
    if "unit" in n or "learned" in n or "top-k only" in n:
        return PALETTE["vsae (text)"]
    return color("vsae" if n.startswith("vsae") else "topk")


def variant_bars(df: pd.DataFrame, names: list[str], title: str, metrics=tuple(BEYOND_METRICS)):
    """One panel per metric, one bar per variant (``df``: one row per variant, column ``sae``)."""
    d = df.set_index("sae").loc[names]
    fig, axes = plt.subplots(1, len(metrics), figsize=(PAGE_WIDTH * 1.2, 3.2))
    for ax, m in zip(np.atleast_1d(axes), metrics):
        ax.bar(range(len(names)), d[m], color=[_variant_color(n) for n in names])
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels([n.replace(" (", "\n(") for n in names], rotation=30, ha="right", fontsize=7)
        ax.set_ylabel(BEYOND_METRICS.get(m, m))
        ax.set_title(BEYOND_METRICS.get(m, m), fontsize=9)
    fig.suptitle(title)
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
    from .stats import t_interval

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

"""Figures of the book: one palette for TopK and vSAE, labelled axes, legible at page width.

Every function returns a matplotlib ``Figure``; :func:`savefig` also writes it as a PNG beside the
executed chapter (``figures/<name>.png``). Paper values, where drawn, are open markers on dashed lines.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

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


def savefig(fig, name: str, folder: str | Path = "figures") -> Path:
    """Save ``fig`` as ``<folder>/<name>.png`` (relative to the executing chapter) and return the path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    fig.savefig(path, bbox_inches="tight")
    return path


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
    """One panel per logged quantity against tokens seen; one line per run (colour = architecture, shade = k).

    ``logs`` has columns run, architecture, k, tokens (or step) and the logged quantities.
    """
    ylabels = {"loss": "total loss", "mse": "MSE (sum over dims, normalised units)", "kl": "KL term (nats)",
               "auxk": "AuxK loss", "l0": "L0 (active latents / token)", "frac_dead": "fraction of dead latents",
               "lr": "learning rate"}
    cols = [c for c in columns if c in logs.columns]
    fig, axes = plt.subplots(1, len(cols), figsize=(PAGE_WIDTH * 1.25, 3.2))
    axes = np.atleast_1d(axes)
    x = "tokens" if "tokens" in logs.columns else "step"
    ks = sorted(logs["k"].unique())
    for ax, c in zip(axes, cols):
        for (arch, k), g in logs.groupby(["architecture", "k"]):
            shade = 0.35 + 0.65 * (ks.index(k) + 1) / len(ks)
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


def metrics_vs_k(ours: pd.DataFrame, metrics, paper: pd.DataFrame | None = None, ours_label: str = "ours",
                 suptitle: str | None = None):
    """1×len(metrics) panels of a metric against k (log2 axis), one line per architecture.

    ``ours``: columns architecture, k and the metric columns (several rows per (architecture, k) are
    averaged and drawn with a 95% interval, e.g. seeds). ``paper``: tidy paper values (metric,
    architecture, k, value), drawn as open markers on dashed lines.
    """
    fig, axes = plt.subplots(1, len(metrics), figsize=(PAGE_WIDTH * 1.2, 3.3))
    axes = np.atleast_1d(axes)
    for ax, m in zip(axes, metrics):
        for arch, g in ours.groupby("architecture", sort=False):
            agg = g.groupby("k")[m].agg(["mean", "count", "std"]).reset_index()
            ax.plot(agg["k"], agg["mean"], marker=MARKERS.get(arch, "o"), color=color(arch), label=f"{label(arch)} ({ours_label})")
            if (agg["count"] > 1).any():
                half = 1.96 * agg["std"].fillna(0) / np.sqrt(agg["count"])
                ax.fill_between(agg["k"], agg["mean"] - half, agg["mean"] + half, color=color(arch), alpha=0.15)
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
    """Sparsity (L0) against explained variance, annotated with k; paper values as open markers."""
    fig, ax = plt.subplots(figsize=(PAGE_WIDTH * 0.55, 4.0))
    for arch, g in ours.groupby("architecture", sort=False):
        g = g.groupby("k")[["l0", y]].mean().reset_index().sort_values("l0")
        ax.plot(g["l0"], g[y], marker=MARKERS.get(arch, "o"), color=color(arch), label=f"{label(arch)} (ours)")
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

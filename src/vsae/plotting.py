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
def _text_box(ax, renderer, x, y, main, note=None, *, fontsize=10.5, note_size=8.5, gap=0.012):
    """Draw ``main`` (and an optional smaller ``note`` below it) centred at (x, y) in data units and
    return the texts and their joint extent in data units (measured with the renderer)."""
    if note:
        t1 = ax.text(x, y + gap, main, ha="center", va="bottom", fontsize=fontsize)
        t2 = ax.text(x, y - gap, note, ha="center", va="top", fontsize=note_size, color="#444")
        texts = [t1, t2]
    else:
        texts = [ax.text(x, y, main, ha="center", va="center", fontsize=fontsize)]
    inv = ax.transData.inverted()
    ext = [t.get_window_extent(renderer).transformed(inv) for t in texts]
    x0, x1 = min(e.x0 for e in ext), max(e.x1 for e in ext)
    y0, y1 = min(e.y0 for e in ext), max(e.y1 for e in ext)
    return texts, (x0, y0, x1, y1)


def architecture_diagram():
    """Block diagram of the TopK SAE (left) and the vSAE (right) as trained by the authors' code.

    Each architecture is a vertical stack: input → encoder → TopK → decoder, with the training loss
    below. Every box is sized from the measured extent of its text, so no formula leaves its box.
    """
    specs = [
        ("topk", "TopK SAE", [
            ("x", "residual activation $x \\in \\mathbb{R}^{d}$", None),
            ("enc", "$a = \\mathrm{ReLU}(W_{enc}^{\\top}(x - b_{dec}) + b_{enc})$", "encoder"),
            ("sparse", "$f = \\mathrm{TopK}(a,\\, k)$", "keep the k largest, zero the rest"),
            ("dec", "$\\hat{x} = W_{dec}^{\\top} f + b_{dec}$", "decoder rows kept at unit norm"),
        ], ("$\\mathcal{L} = \\|x - \\hat{x}\\|^2 + \\alpha \\cdot \\mathrm{AuxK}$",
            "training loss (AuxK revives dead latents)")),
        ("vsae", "variational TopK SAE (vSAE)", [
            ("x", "residual activation $x \\in \\mathbb{R}^{d}$", None),
            ("enc", "$\\mu = \\mathrm{ReLU}(W_{enc}^{\\top} x + b_{enc})$",
             "$z = \\mu$ (code);  $z = \\mu + \\sigma\\epsilon$ in training (text)"),
            ("sparse", "$s = \\mathrm{TopK}(|z|,\\, k)$", "sign kept"),
            ("dec", "$\\hat{x} = W_{dec}^{\\top} s + b_{dec}$", "decoder unconstrained"),
        ], ("$\\mathcal{L} = \\|x - \\hat{x}\\|^2 + \\beta(t) \\cdot \\frac{1}{2}\\sum_i z_i^2$",
            "training loss; the KL term covers all latents, selected or not")),
    ]
    fig = plt.figure(figsize=(PAGE_WIDTH, 6.0))
    renderer = fig.canvas.get_renderer()
    ys = [0.855, 0.67, 0.485, 0.30, 0.095]  # centres of the five rows (axes fraction)
    for col, (arch, title, boxes, loss) in enumerate(specs):
        ax = fig.add_axes([0.01 + 0.5 * col, 0.01, 0.48, 0.98])
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.axis("off")
        cx = 0.40 if arch == "vsae" else 0.5  # leave room for the posterior sketch beside the vSAE stack
        ax.text(0.5, 0.975, title, ha="center", va="center", color=color(arch), fontweight="bold", fontsize=12.5)
        items = [(key, main, note) for key, main, note in boxes] + [("loss", loss[0], loss[1])]
        drawn = [_text_box(ax, renderer, cx, y, main, note) for (key, main, note), y in zip(items, ys)]
        padx, pady = 0.03, 0.022
        half_w = max(max(cx - e[0], e[2] - cx) for _, e in drawn) + padx  # one width for the whole stack
        frames = []
        for (key, _, _), (_, (x0, y0, x1, y1)) in zip(items, drawn):
            if key == "x":
                fc, ec, ls = "#f2f2f2", "#777", "-"
            elif key == "loss":
                fc, ec, ls = "white", "#555", "--"
            else:
                fc, ec, ls = matplotlib.colors.to_rgba(color(arch), 0.12), color(arch), "-"
            bx0, by0, bx1, by1 = cx - half_w, y0 - pady, cx + half_w, y1 + pady
            ax.add_patch(matplotlib.patches.FancyBboxPatch((bx0, by0), bx1 - bx0, by1 - by0,
                                                           boxstyle="round,pad=0,rounding_size=0.015",
                                                           fc=fc, ec=ec, ls=ls, lw=1.3, zorder=0))
            frames.append((bx0, by0, bx1, by1))
        for a, b in zip(frames[:3], frames[1:4]):  # data flow x -> encoder -> TopK -> decoder
            ax.annotate("", xy=(cx, b[3] + 0.004), xytext=(cx, a[1] - 0.004),
                        arrowprops=dict(arrowstyle="-|>", color="#444", lw=1.3))
        if arch == "vsae":  # the Gaussian spread of each latent in the blog post's picture, beside the encoder
            enc = frames[1]
            gx0, gx1 = enc[2] + 0.04, 0.99
            g = np.linspace(-3, 3, 80)
            gc = (gx0 + gx1) / 2
            base = enc[1] + 0.045
            for j, s in enumerate((0.6, 0.85, 1.1)):
                ax.plot(gc + (gx1 - gx0) * 0.42 * g / 3, base + 0.075 * np.exp(-g ** 2 / (2 * s ** 2)),
                        color=color(arch), alpha=0.3 + 0.25 * j, lw=1.4)
            ax.text(gc, enc[1] + 0.02, "Gaussian posterior\nper latent (text);\nfixed variance,\nno sampling (code)",
                    ha="center", va="top", fontsize=8, color="#444")
            ax.annotate("", xy=(enc[2] + 0.005, (enc[1] + enc[3]) / 2), xytext=(gx0 + 0.01, base + 0.04),
                        arrowprops=dict(arrowstyle="-", color="#999", lw=0.8, ls=":"))
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


# --------------------------------------------------------------------------------------------- #
# Chapter 5: sparse probing
# --------------------------------------------------------------------------------------------- #
def _zoom_y(ax, values, pad: float = 0.12, include=()) -> tuple[float, float]:
    """Set the y-limits to the finite ``values`` (and ``include``) plus ``pad`` of their range."""
    v = np.asarray([x for x in list(np.ravel(values)) + list(include) if x is not None], dtype=float)
    v = v[np.isfinite(v)]
    if not v.size:
        return ax.get_ylim()
    lo, hi = float(v.min()), float(v.max())
    span = hi - lo if hi > lo else max(abs(hi), 1e-3) * 0.1
    ax.set_ylim(lo - pad * span, hi + pad * span)
    return ax.get_ylim()


def _spread_labels(ax, points, fontsize: float = 7.5, dx_pts: float = 6.0, min_gap_pts: float | None = None) -> None:
    """Annotate ``points`` ((x, y, text, colour[, side]) in data units; side +1 right, -1 left of the
    point), pushing labels on the same side apart vertically (in points) so that none overlaps
    another; a thin leader line joins a moved label to its point. Call once the limits are final."""
    if not points:
        return
    gap = min_gap_pts if min_gap_pts is not None else fontsize * 1.25
    to_pts = 72.0 / ax.figure.dpi
    disp = [(ax.transData.transform((p[0], p[1])), p[0], p[1], p[2], p[3], p[4] if len(p) > 4 else 1) for p in points]
    disp.sort(key=lambda d: (d[0][1], d[0][0]))
    placed: list[tuple[float, float, int]] = []  # (x, y, side) of labels, in points
    for (px, py), x, y, t, c, side in disp:
        xp, yp = px * to_pts, py * to_pts
        ly = yp
        for ox, oy, os_ in placed:
            if os_ == side and abs(ox - xp) < 45 and ly < oy + gap:
                ly = oy + gap
        placed.append((xp, ly, side))
        moved = ly - yp > 1
        ax.annotate(t, (x, y), textcoords="offset points", xytext=(side * dx_pts, ly - yp), fontsize=fontsize, color=c,
                    va="center", ha="left" if side > 0 else "right",
                    arrowprops=dict(arrowstyle="-", color=c, lw=0.6, alpha=0.7, shrinkA=0, shrinkB=2) if moved else None)


def _paper_wide(paper: pd.DataFrame | None) -> pd.DataFrame | None:
    """The paper's tidy rows as one row per (architecture, k) with a column per metric."""
    if paper is None or not len(paper):
        return None
    return paper.pivot_table(index=["architecture", "k"], columns="metric", values="value").reset_index()


def probing_2x2(summary: pd.DataFrame, probe_ks=(1, 2, 5), paper: pd.DataFrame | None = None):
    """The paper's sparse-probing figure from a per-SAE summary.

    ``summary``: one row per SAE with architecture, sae_k, sae_test_accuracy, llm_test_accuracy,
    preservation, and sae_top_{k}_test_accuracy / top_{k}_preservation for k in ``probe_ks``. Rows of
    the same (architecture, sae_k) are seeds: drawn as their mean, with 95% t-intervals as error bars.
    ``paper``: the paper's tidy values (``paper.paper_results("sparse_probing")``: metric,
    architecture, k, value), drawn as open markers on dashed lines. Every y-axis is zoomed to the
    values drawn (accuracies differ in the second decimal; a 0–1 axis would hide that).
    """
    from .stats import t_interval

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


# --------------------------------------------------------------------------------------------- #
# Chapters 6 and 7: SCR and TPP
# --------------------------------------------------------------------------------------------- #
def _arch_order(df: pd.DataFrame) -> list[str]:
    archs = list(dict.fromkeys(df["architecture"]))
    return sorted(archs, key=lambda a: (list(PALETTE).index(a) if a in PALETTE else len(PALETTE), a))


def _per_k_panel(ax, df: pd.DataFrame, y: str, k, *, ls="-", paper: pd.DataFrame | None = None, paper_metric=None,
                 archs=None, dodge: float = 0.07, paper_ls=":") -> list[tuple[float, float, str]]:
    """One SAE size ``k``: per architecture, the seed mean of ``y`` against N with 95% t-interval
    error bars (dodged sideways on the log axis so they do not overlap); the paper's values as open
    markers. Returns the (x, mean, colour) of every point drawn, for the y-limits."""
    archs = archs or _arch_order(df)
    drawn = []
    sub = df[df["sae_k"] == k]
    for i, arch in enumerate(archs):
        g = sub[sub["architecture"] == arch]
        if not len(g):
            continue
        agg = _mean_half(g, "n", y)
        x = agg["n"].to_numpy(dtype=float) * 2 ** (dodge * (i - (len(archs) - 1) / 2))
        half = agg["half"].to_numpy(dtype=float)
        ax.errorbar(x, agg["mean"], yerr=None if np.isnan(half).all() else np.nan_to_num(half), ls=ls,
                    marker=MARKERS.get(arch, "o"), ms=5, lw=1.5, capsize=2.5, elinewidth=1, color=color(arch),
                    mfc=color(arch) if ls == "-" else "white")
        drawn += [(xi, mi, color(arch)) for xi, mi in zip(x, agg["mean"])]
    if paper is not None:
        pg = paper[(paper.metric == paper_metric) & (paper.k == k)]
        for arch, g in pg.groupby("architecture", sort=False):
            g = g.sort_values("n_ablated")
            ax.plot(g["n_ablated"].astype(float), g["value"], ls=paper_ls, marker=MARKERS.get(arch, "o"), mfc="none",
                    ms=6, color=color(arch), alpha=0.7, lw=1.1)
            drawn += [(float(xi), float(vi), color(arch)) for xi, vi in zip(g["n_ablated"], g["value"])]
    _log_n_axis(ax, df["n"])
    return drawn


def _log_n_axis(ax, ns) -> None:
    """Log x axis with a tick at every number of ablated latents N."""
    ns = sorted(int(n) for n in pd.unique(pd.Series(ns)))
    ax.set_xscale("log")
    ax.set_xticks(ns)
    ax.set_xticklabels([str(n) for n in ns], fontsize=8)
    ax.minorticks_off()
    ax.set_xlabel("latents ablated N (log scale)")


def _robust_ylim(ax, drawn, q=(2, 98), pad: float = 0.1, symlog_above: float | None = None, linthresh: float = 1.0,
                 include=(0.0,)) -> tuple[bool, int]:
    """Limits from the plotted means (not the error bars, which near-zero denominators blow up),
    cut to their 2nd–98th percentile where an extreme lies further out than half that range;
    symmetric-log when the means exceed ``symlog_above`` in magnitude; an arrow with the value at
    the edge for every mean that falls off the axis. Returns (symlog used,
    number of off-scale points)."""
    v = np.array([d[1] for d in drawn], dtype=float)
    v = v[np.isfinite(v)]
    if not v.size:
        return False, 0
    p_lo, p_hi = np.percentile(v, q)
    spread = max(p_hi - p_lo, 1e-12)
    # clip only an outlying extreme (beyond half the percentile range); otherwise show every mean
    lo = p_lo if p_lo - v.min() > 0.5 * spread else v.min()
    hi = p_hi if v.max() - p_hi > 0.5 * spread else v.max()
    lo, hi = min(lo, *include), max(hi, *include)
    use_symlog = symlog_above is not None and np.abs(v).max() > symlog_above
    if use_symlog:
        ax.set_yscale("symlog", linthresh=linthresh)
        f = lambda t: np.sign(t) * np.log10(1 + np.abs(t) / linthresh)  # noqa: E731
        finv = lambda t: np.sign(t) * linthresh * (10 ** np.abs(t) - 1)  # noqa: E731
        a, b = f(lo), f(hi)
        span = (b - a) or 1.0
        lo, hi = finv(a - pad * span), finv(b + pad * span)
    else:
        span = (hi - lo) or max(abs(hi), 1e-3)
        lo, hi = lo - pad * span, hi + pad * span
    ax.set_ylim(lo, hi)
    if use_symlog:
        base = [0.0] + [m * 10.0 ** e for e in range(0, 4) for m in (1, 3)]
        ticks = sorted({sg * b * linthresh for b in base for sg in (-1, 1)})
        ax.set_yticks([t for t in ticks if lo <= t <= hi])
        ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(
            lambda t, _: "0" if t == 0 else f"{t:g}".replace("-", "\u2212")))
        ax.yaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    off = [(x, m, c) for x, m, c in drawn if np.isfinite(m) and (m < lo or m > hi)]
    for x, m, c in off:
        top = m > hi
        ax.annotate(f"{m:.2g}", xy=(x, hi if top else lo), xytext=(0, -16 if top else 16), textcoords="offset points",
                    ha="center", va="center", fontsize=7, color=c,
                    arrowprops=dict(arrowstyle="->", color=c, lw=1), annotation_clip=False)
    return use_symlog, len(off)


def _heatmap(ax, df: pd.DataFrame, y: str, title: str, cbar_label: str | None = None, cmap="RdBu_r", center=0.0,
             cax=None):
    """Mean over seeds of ``y`` per (architecture, k) row and N column, with a colourbar."""
    short = {"topk": "TopK", "vsae": "vSAE"}
    df = df.assign(row=[f"{short.get(a, label(a))} k={int(k)}" for a, k in zip(df["architecture"], df["sae_k"])])
    piv = df.pivot_table(index="row", columns="n", values=y, aggfunc="mean")
    order = [s for s in dict.fromkeys(df.sort_values(["architecture", "sae_k"])["row"]) if s in piv.index]
    piv = piv.loc[order]
    piv.columns = [int(c) for c in piv.columns]
    kw = dict(center=center) if center is not None else {}
    sns.heatmap(piv, ax=ax, annot=True, fmt=".2f", cmap=cmap, cbar=True, cbar_ax=cax, linewidths=0.5,
                linecolor="white", annot_kws={"fontsize": 8}, cbar_kws={"label": cbar_label or title}, **kw)
    ax.set_xlabel("latents ablated N")
    ax.set_ylabel("SAE (architecture, k)")
    ax.tick_params(axis="y", rotation=0)
    ax.set_title(title)


def _scr_tpp_grid(ks, n_cols: int = 3):
    """One row of ``n_cols`` line panels per SAE k, then a heatmap (two columns) and the legend."""
    ks = list(ks)
    fig = plt.figure(figsize=(PAGE_WIDTH, 2.9 * len(ks) + 2.7), layout="constrained")
    fig.get_layout_engine().set(w_pad=0.06, h_pad=0.08, wspace=0.04, hspace=0.06)
    gs = fig.add_gridspec(len(ks) + 1, n_cols, height_ratios=[1] * len(ks) + [0.95])
    panels = np.array([[fig.add_subplot(gs[i, j]) for j in range(n_cols)] for i in range(len(ks))])
    hgs = gs[-1, : n_cols - 1].subgridspec(1, 2, width_ratios=[1, 0.03])
    heat, cax = fig.add_subplot(hgs[0, 0]), fig.add_subplot(hgs[0, 1], label="<colorbar>")
    leg = fig.add_subplot(gs[-1, n_cols - 1])
    leg.axis("off")
    return fig, panels, heat, cax, leg


def _legend_handles(archs, paper: bool, n_seeds: int, extra=()):
    from matplotlib.lines import Line2D

    ci = f"mean ± 95% CI over {n_seeds} seeds" if n_seeds > 1 else "one seed"
    hs = [Line2D([], [], color=color(a), marker=MARKERS.get(a, "o"), lw=1.5, label=f"{label(a)} (ours, {ci})") for a in archs]
    if paper:
        hs += [Line2D([], [], color=color(a), marker=MARKERS.get(a, "o"), mfc="none", ls=":", alpha=0.7,
                      label=f"{label(a)} (paper, Pythia-70M)") for a in archs]
    return hs + list(extra)


def _n_seeds(df: pd.DataFrame) -> int:
    if "seed" in df:
        return int(df.groupby(["architecture", "sae_k", "n"])["seed"].nunique().max())
    return int(df.groupby(["architecture", "sae_k", "n"]).size().max())


def scr_1x4(scr_all: pd.DataFrame, paper: pd.DataFrame | None = None, *, symlog_above: float = 5.0):
    """SCR metric, direction 1 and direction 2 against N (one row of panels per SAE k, so each panel
    compares the two architectures at one size), and a heatmap of the metric with its colourbar.

    ``scr_all``: the ``pair == "ALL"`` rows (sae, architecture, sae_k, n, scr_metric, scr_dir1, scr_dir2), ``n``
    being the number of latents ablated; rows of the same (sae_k, architecture, n) are seeds (mean,
    95% t-interval error bars). ``paper``: tidy paper values (metric ``scr_metric``). The y-limits
    follow the 2nd–98th percentile of the plotted means; a direction panel whose means exceed
    ``symlog_above`` in magnitude (near-zero denominators) switches to a symmetric-log axis.
    """
    ks = sorted(scr_all["sae_k"].unique())
    archs = _arch_order(scr_all)
    fig, panels, heat, cax, leg = _scr_tpp_grid(ks)
    cols = [("scr_metric", "SCR metric", "SCR metric\n(fraction of gap recovered)", None),
            ("scr_dir1", "Dir. 1: spurious latents ablated", "SCR direction 1\n(fraction recovered)", symlog_above),
            ("scr_dir2", "Dir. 2: target latents ablated", "SCR direction 2\n(fraction recovered)", symlog_above)]
    n_off = 0
    for i, k in enumerate(ks):
        for j, (y, title, ylab, sl) in enumerate(cols):
            ax = panels[i, j]
            drawn = _per_k_panel(ax, scr_all, y, k, archs=archs, paper=paper if j == 0 else None,
                                 paper_metric="scr_metric")
            ax.axhline(0, color="#888", lw=0.8, zorder=0)
            symlog, off = _robust_ylim(ax, drawn, symlog_above=sl)
            n_off += off
            ax.set_title(f"{title}, k={k}", fontsize=9.5)
            ax.set_ylabel(ylab.replace(")", ";\nsymmetric log beyond ±1)") if symlog else ylab, fontsize=8.5)
            if i < len(ks) - 1:
                ax.set_xlabel("")
    _heatmap(heat, scr_all, "scr_metric", "SCR metric (seed mean)", "SCR metric", cax=cax)
    _legend_panel(leg, _legend_handles(archs, paper is not None, _n_seeds(scr_all)), n_off)
    return fig


def _legend_panel(leg, handles, n_off: int) -> None:
    leg.legend(handles=handles, loc="center", fontsize=8, frameon=False)
    if n_off:
        leg.text(0.5, 0.0, f"arrows at an axis edge: {n_off} mean(s) beyond the\naxis, "
                 "drawn with their value (axes follow the\n2nd–98th percentile of the plotted means)",
                 transform=leg.transAxes, ha="center", va="bottom", fontsize=7.5, color="#555")


def tpp_1x4(tpp_all: pd.DataFrame, paper: pd.DataFrame | None = None, *, selectivity: str = "share",
            ratio_floor: float = 0.002):
    """TPP total against N, intended (solid) vs unintended (dashed), selectivity (one row of panels
    per SAE k), and a heatmap of the total with its colourbar.

    ``tpp_all``: mean-over-classes rows (sae, architecture, sae_k, n, tpp_total, tpp_intended, tpp_unintended);
    rows of the same (sae_k, architecture, n) are seeds. ``selectivity``: ``"share"`` (default)
    draws intended / (|intended| + |unintended|), the share of the accuracy drop that lands on the
    targeted class (1 = all of it, 0.5 = as much elsewhere), which stays bounded when the unintended
    effect is near zero; ``"ratio"`` draws intended / |unintended| on a log axis from the seed means,
    leaving out points whose mean |unintended| is below ``ratio_floor``.
    """
    from matplotlib.lines import Line2D

    if selectivity not in ("share", "ratio"):
        raise ValueError(f"selectivity must be 'share' or 'ratio', got {selectivity!r}")
    ks = sorted(tpp_all["sae_k"].unique())
    archs = _arch_order(tpp_all)
    fig, panels, heat, cax, leg = _scr_tpp_grid(ks)
    denom = tpp_all["tpp_intended"].abs() + tpp_all["tpp_unintended"].abs()
    share = tpp_all.assign(selectivity=(tpp_all["tpp_intended"] / denom).where(denom > 1e-4))
    n_masked = n_off = 0
    for i, k in enumerate(ks):
        ax = panels[i, 0]
        drawn = _per_k_panel(ax, tpp_all, "tpp_total", k, archs=archs, paper=paper, paper_metric="tpp_total")
        n_off += _robust_ylim(ax, drawn)[1]
        ax.set_title(f"TPP total, k={k}", fontsize=9.5)
        ax.set_ylabel("TPP total: intended −\nunintended (accuracy drop)", fontsize=8.5)
        ax = panels[i, 1]
        d1 = _per_k_panel(ax, tpp_all, "tpp_intended", k, archs=archs)
        d2 = _per_k_panel(ax, tpp_all, "tpp_unintended", k, archs=archs, ls="--")
        n_off += _robust_ylim(ax, d1 + d2)[1]
        ax.set_title(f"Intended (solid), unintended (dashed), k={k}", fontsize=9)
        ax.set_ylabel("accuracy drop (fraction)", fontsize=8.5)
        ax = panels[i, 2]
        if selectivity == "share":
            drawn = _per_k_panel(ax, share, "selectivity", k, archs=archs)
            ax.axhline(0.5, color="#888", lw=0.8, ls="--", zorder=0)
            n_off += _robust_ylim(ax, drawn, include=(0.5, 1.0))[1]
            ax.set_ylabel("intended / (|intended| + |unintended|)", fontsize=8)
            ax.set_title(f"Selectivity share, k={k} (dashed: none)", fontsize=9.5)
        else:
            sub = tpp_all[tpp_all["sae_k"] == k]
            for a_i, arch in enumerate(archs):
                g = sub[sub.architecture == arch].groupby("n")[["tpp_intended", "tpp_unintended"]].mean().reset_index()
                keep = g["tpp_unintended"].abs() >= ratio_floor
                n_masked += int((~keep).sum())
                g = g[keep]
                x = g["n"].to_numpy(dtype=float) * 2 ** (0.07 * (a_i - (len(archs) - 1) / 2))
                ax.plot(x, g["tpp_intended"] / g["tpp_unintended"].abs(), marker=MARKERS.get(arch, "o"), ms=5,
                        color=color(arch))
            _log_n_axis(ax, tpp_all["n"])
            ax.set_yscale("log")
            plain = matplotlib.ticker.FuncFormatter(lambda t, _: f"{t:g}")
            ax.yaxis.set_major_formatter(plain)
            ax.yaxis.set_minor_formatter(matplotlib.ticker.FuncFormatter(
                lambda t, _: f"{t:g}" if f"{t:g}".lstrip("0.")[:1] in ("2", "5") else ""))
            ax.axhline(1.0, color="#888", lw=0.8, ls="--", zorder=0)
            ax.set_ylabel("intended / |unintended| (seed means)", fontsize=8)
            ax.set_title(f"Selectivity ratio, k={k}", fontsize=9.5)
        if i < len(ks) - 1:
            for a in panels[i]:
                a.set_xlabel("")
    if selectivity == "ratio" and n_masked:
        panels[-1, 2].text(0.02, 0.02, f"{n_masked} points with |unintended| < {ratio_floor:g} left out",
                           transform=panels[-1, 2].transAxes, fontsize=7, color="#555")
    _heatmap(heat, tpp_all, "tpp_total", "TPP total (seed mean)", "TPP total (accuracy drop)", cmap="rocket_r",
             center=None, cax=cax)
    extra = [Line2D([], [], color="#444", ls="-", marker="o", ms=4, label="intended (middle panels)"),
             Line2D([], [], color="#444", ls="--", marker="o", mfc="white", ms=4, label="unintended (middle panels)")]
    _legend_panel(leg, _legend_handles(archs, paper is not None, _n_seeds(tpp_all), extra), n_off)
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
def _categories(values: pd.Series, max_categories: int) -> pd.Series:
    """The ``max_categories - 1`` most frequent values, the rest as ``"other"``."""
    s = values.astype(str)
    top = s.value_counts()
    if len(top) > max_categories:
        keep = set(top.index[: max_categories - 1])
        s = s.where(s.isin(keep), "other")
    return s


def token_tsne_panels(emb: dict[str, pd.DataFrame], arch_of: dict[str, str], *, color_by: str | None = "source",
                      max_categories: int = 10):
    """Token-space t-SNE per SAE: a scatter coloured by the categorical column ``color_by`` of each
    frame (default ``"source"``: the corpus / document source of the token; one legend, the same
    colour for a category in every panel) and a hexbin density below.

    Without that column (or with ``color_by=None``) the scatter is coloured by ``l0`` (active kept
    latents per token) when present. At most ``max_categories`` categories, the rarest merged into
    "other"; points are drawn in a random order so that no category hides another.
    """
    frames = list(emb.values())
    cat = color_by is not None and len(frames) > 0 and all(color_by in df.columns for df in frames)
    if cat:
        allv = _categories(pd.concat([df[color_by] for df in frames], ignore_index=True), max_categories)
        cats = list(allv.value_counts().index)
        if "other" in cats:
            cats = [c for c in cats if c != "other"] + ["other"]
        pal = dict(zip(cats, sns.color_palette("tab10" if len(cats) <= 10 else "tab20", len(cats))))
        if "other" in pal:
            pal["other"] = (0.6, 0.6, 0.6)
        keep = set(cats) - {"other"}
    fig, axes = plt.subplots(2, len(emb), figsize=(PAGE_WIDTH, 8.4 if cat else 8.0), squeeze=False)
    for j, (name, df) in enumerate(emb.items()):
        ax = axes[0, j]
        if cat:
            c = df[color_by].astype(str)
            c = c.where(c.isin(keep), "other")
            order = np.random.default_rng(0).permutation(len(df))
            ax.scatter(df["x"].to_numpy()[order], df["y"].to_numpy()[order], c=[pal[v] for v in c.to_numpy()[order]],
                       s=3, alpha=0.7, lw=0, rasterized=True)
            ax.set_title(f"{name}: {len(df):,} tokens, coloured by {color_by}", color=color(arch_of.get(name, "")),
                         fontsize=10)
        else:
            has_l0 = "l0" in df
            sc = ax.scatter(df["x"], df["y"], c=df["l0"] if has_l0 else color(arch_of.get(name, "")), s=2,
                            cmap="viridis" if has_l0 else None, alpha=0.7, rasterized=True)
            if has_l0:
                fig.colorbar(sc, ax=ax, label="active kept latents per token")
            ax.set_title(f"{name}: {len(df):,} tokens", color=color(arch_of.get(name, "")))
        ax.set_xlabel("t-SNE 1 (arbitrary units)")
        ax.set_ylabel("t-SNE 2 (arbitrary units)")
        ax = axes[1, j]
        hb = ax.hexbin(df["x"], df["y"], gridsize=40, cmap="magma", mincnt=1)
        fig.colorbar(hb, ax=ax, label="tokens per cell")
        ax.set_xlabel("t-SNE 1 (arbitrary units)")
        ax.set_ylabel("t-SNE 2 (arbitrary units)")
        ax.set_title("token density")
    if cat:
        from matplotlib.lines import Line2D

        counts = allv.value_counts()
        hs = [Line2D([], [], ls="none", marker="o", ms=7, color=pal[c], label=f"{c} ({counts.get(c, 0):,})") for c in cats]
        fig.tight_layout(rect=(0, 0, 1, 0.93 if len(hs) > 6 else 0.95))
        fig.legend(handles=hs, loc="upper center", ncol=min(len(hs), 6), fontsize=8.5, frameon=False,
                   bbox_to_anchor=(0.5, 1.0), title=f"{color_by} (tokens, all panels)", title_fontsize=9)
    else:
        fig.tight_layout()
    return fig


def _separate_tags(ax, tags, iterations: int = 30) -> None:
    """Nudge overlapping annotations (offset in points) apart vertically; a moved tag gets a leader line."""
    renderer = ax.figure.canvas.get_renderer()
    to_pts = 72.0 / ax.figure.dpi
    for _ in range(iterations):
        boxes = [t.get_window_extent(renderer) for t in tags]
        moved = False
        for i in range(len(tags)):
            for j in range(i + 1, len(tags)):
                a, b = boxes[i], boxes[j]
                if a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1:
                    up = j if (b.y0 + b.y1) >= (a.y0 + a.y1) else i
                    other = boxes[i if up == j else j]
                    dx, dy = tags[up].xyann
                    shift = (other.y1 - boxes[up].y0 + 2) * to_pts
                    tags[up].xyann = (dx, dy + shift)
                    boxes[up] = tags[up].get_window_extent(renderer)
                    moved = True
        if not moved:
            break
    for t in tags:
        if abs(t.xyann[1]) > 0.5:
            ax.annotate("", t.xy, xytext=t.xyann, textcoords="offset points",
                        arrowprops=dict(arrowstyle="-", color="#333", lw=0.7, shrinkA=4, shrinkB=0))


def feature_tsne_panels(feat: pd.DataFrame, name: str, arch: str):
    """The paper's 1×4 feature-space figure for one SAE: clusters, utilisation, activation, per-cluster use.

    Each cluster is numbered once, at its centre (k-means on the 2-D embedding keeps the centres
    apart), in the colour its bar has in the last panel; the latent count of a cluster is in its
    x tick label rather than over the bar, so no label overlaps another.
    """
    clusters = sorted(int(c) for c in feat["cluster"].unique())
    cmap = plt.get_cmap("tab10" if len(clusters) <= 10 else "tab20")
    ccol = {c: cmap(i % cmap.N) for i, c in enumerate(clusters)}
    fig, axes = plt.subplots(1, 4, figsize=(PAGE_WIDTH * 1.2, 3.6), gridspec_kw={"width_ratios": [1, 1.15, 1.15, 1.1]})
    ax = axes[0]
    ax.scatter(feat["x"], feat["y"], c=[ccol[int(c)] for c in feat["cluster"]], s=6, lw=0, rasterized=True)
    tags = [ax.annotate(str(int(c)), (g["x"].median(), g["y"].median()), xytext=(0, 0), textcoords="offset points",
                        ha="center", va="center", fontsize=8, fontweight="bold", color="black",
                        bbox=dict(boxstyle="round,pad=0.15", fc="white", ec=ccol[int(c)], lw=1, alpha=0.85))
            for c, g in feat.groupby("cluster")]
    fig.tight_layout()
    _separate_tags(ax, tags)
    ax.set_title(f"{name}: {len(feat)} latents, k-means clusters", fontsize=9, color=color(arch))
    ax = axes[1]
    sc = ax.scatter(feat["x"], feat["y"], c=np.log10(feat["utilization"].clip(lower=1e-6)), cmap="viridis", s=6, lw=0,
                    rasterized=True)
    fig.colorbar(sc, ax=ax, label="log10 firing density")
    ax.set_title("utilisation (firing density)", fontsize=9)
    ax = axes[2]
    u = feat["utilization"].to_numpy(dtype=float)
    size = 3 + 60 * u / max(float(u.max()), 1e-12)
    order = np.argsort(-size)  # small points on top of large ones
    sc = ax.scatter(feat["x"].to_numpy()[order], feat["y"].to_numpy()[order], c=feat["mean_activation"].to_numpy()[order],
                    s=size[order], cmap="plasma", alpha=0.7, lw=0, rasterized=True)
    fig.colorbar(sc, ax=ax, label="mean activation when firing")
    ax.set_title("activation (size ∝ utilisation)", fontsize=9)
    for a in axes[:3]:
        a.set_xlabel("t-SNE 1 (arbitrary units)")
        a.set_ylabel("t-SNE 2 (arbitrary units)")
    ax = axes[3]
    cu = feat.groupby("cluster").agg(n=("latent", "size"), u=("utilization", "mean")).reset_index()
    x = np.arange(len(cu))
    ax.bar(x, cu["u"], color=[ccol[int(c)] for c in cu["cluster"]])
    ax.set_xticks(x)
    ax.set_xticklabels([f"{int(c)}\n{int(n)}" for c, n in zip(cu["cluster"], cu["n"])], fontsize=7.5)
    ax.set_xlabel("cluster (number above, latents in it below)", fontsize=8.5)
    ax.set_ylabel("mean utilisation (firing density)", fontsize=8.5)
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

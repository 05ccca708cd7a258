"""Figures of chapters 1-3: the architecture diagram, activation norms, training curves."""

from __future__ import annotations


import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from .style import PAGE_WIDTH, color, label



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

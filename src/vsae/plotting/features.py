"""Figures of chapters 8 and 9: per-latent statistics, feature pairs, t-SNE panels, decoder cosines."""

from __future__ import annotations


import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from .style import PAGE_WIDTH, color



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
def _ranked_counts(s: pd.Series) -> pd.Series:
    """``value_counts`` with ties broken by the value itself (not by hash-table or first-seen order)."""
    c = s.value_counts()
    order = sorted(c.index, key=lambda v: (-int(c[v]), str(v)))
    return c.loc[order]


def _categories(values: pd.Series, max_categories: int) -> pd.Series:
    """The ``max_categories - 1`` most frequent values, the rest as ``"other"``."""
    s = values.astype(str)
    top = _ranked_counts(s)
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
        cats = list(_ranked_counts(allv).index)
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

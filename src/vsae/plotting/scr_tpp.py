"""Figures of chapters 6 and 7: SCR and TPP against the number of ablated latents, per k."""

from __future__ import annotations


import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from .core import _mean_half
from .style import MARKERS, PAGE_WIDTH, _arch_order, _legend_handles, _log_n_axis, _n_seeds, _robust_ylim, color, label



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

"""Palette, labels, saving, and the axis helpers shared by every figure."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Iterable

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns



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


#: PNG metadata of every saved figure: none. Matplotlib writes a ``Software`` text chunk naming its
#: version (and a backend may add a date); the bytes of a figure depend on what it shows only.
PNG_METADATA = {"Software": None}


def render_png(fig) -> bytes:
    """The PNG bytes :func:`savefig` writes for ``fig``: ``bbox_inches="tight"`` at ``savefig.dpi``, no
    metadata. The same figure gives the same bytes in every process (tests/test_figure_bytes.py)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight", metadata=PNG_METADATA)
    return buf.getvalue()


def savefig(fig, name: str, folder: str | Path = "figures") -> None:
    """Save ``fig`` as ``<folder>/<name>.png`` (relative to the executing chapter), show it, close it.

    The file is written (atomically) only when its bytes change, so a re-execution that draws the same
    figure leaves it untouched. Returns nothing, so that a cell ending with it shows only the figure.
    """
    from ..files import atomic_write

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    data = render_png(fig)
    if not path.exists() or path.read_bytes() != data:
        atomic_write(path, data)
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


def _arch_order(df: pd.DataFrame) -> list[str]:
    archs = list(dict.fromkeys(df["architecture"]))
    return sorted(archs, key=lambda a: (list(PALETTE).index(a) if a in PALETTE else len(PALETTE), a))


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

"""Figures of the book from small synthetic inputs shaped like the chapters' real ones.

Each test builds a tiny frame with the columns the notebook passes, calls the figure function,
checks that it returns a Figure with labelled axes and writes it as a PNG (to a temporary folder,
or to ``$VSAE_PLOT_DIR`` when set, to look at them).
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from vsae import paper, plotting  # noqa: E402

SEEDS = (42, 43, 44)
NS = (2, 5, 10, 20, 50, 100, 500)


@pytest.fixture(autouse=True)
def _theme():
    plotting.setup()
    yield
    plt.close("all")


@pytest.fixture
def out_dir(tmp_path) -> Path:
    d = os.environ.get("VSAE_PLOT_DIR")
    if d:
        Path(d).mkdir(parents=True, exist_ok=True)
        return Path(d)
    return tmp_path


def _save(fig, out_dir: Path, name: str) -> Path:
    path = out_dir / f"{name}.png"
    fig.savefig(path, bbox_inches="tight")
    assert path.stat().st_size > 10_000
    return path


def _data_axes(fig):
    """Axes that show data (not colourbars, legends-only or switched-off axes)."""
    out = []
    for ax in fig.axes:
        if not ax.axison or ax.get_label() == "<colorbar>":
            continue
        if ax.get_xlabel() == "" and ax.get_ylabel() == "" and not ax.collections and not ax.lines:
            continue
        out.append(ax)
    return out


def _assert_labelled(fig, allow_no_x=()):
    assert isinstance(fig, Figure)
    axes = _data_axes(fig)
    assert axes
    for i, ax in enumerate(axes):
        assert ax.get_ylabel().strip(), f"axes {i} ({ax.get_title()!r}) has no y label"
        if i not in allow_no_x:
            assert ax.get_xlabel().strip() or ax.get_xticklabels(), f"axes {i} has no x label"


# --------------------------------------------------------------------------------------------- #
# synthetic inputs
# --------------------------------------------------------------------------------------------- #
def _grid():
    """Every (architecture, k, seed, N, t) of the synthetic tables, t = log2(N) / log2(500) in [0, 1]."""
    for arch in ("topk", "vsae"):
        for k in (256, 512):
            for s in SEEDS:
                for n in NS:
                    yield arch, k, s, n, np.log2(n) / np.log2(500)


def _scr_all(rng=None) -> pd.DataFrame:
    """SCR ``pair == "ALL"`` rows: 2 SAE sizes x 2 architectures x 3 seeds x 7 N; direction 2 of
    TopK k=512 blown up by near-zero denominators as in the executed chapter."""
    rng = rng or np.random.default_rng(0)
    rows = []
    for arch, k, s, n, t in _grid():
        metric = 0.1 - 0.6 * t ** 2 + rng.normal(0, 0.15)
        d1 = -1.5 * t ** 3 * (2 if k == 512 else 1) + rng.normal(0, 0.2)
        blow = 40 if (arch == "topk" and k == 512) else 8
        d2 = -blow * t ** 2 * rng.uniform(0.3, 1.5) + rng.normal(0, 0.5)
        rows.append(dict(sae=f"{arch}_k{k}_s{s}", architecture=arch, sae_k=k, seed=s, n=n, pair="ALL",
                         scr_metric=metric, scr_dir1=d1, scr_dir2=d2))
    return pd.DataFrame(rows)


def _tpp_all(rng=None) -> pd.DataFrame:
    rng = rng or np.random.default_rng(1)
    rows = []
    for arch, k, s, n, t in _grid():
        speed = 2.0 if (arch == "topk" and k == 512) else 1.0
        intended = 0.4744 / (1 + np.exp(-10 * (speed * t - 0.45))) + rng.normal(0, 0.01)
        unintended = max(0.004, (0.33 if arch == "topk" else 0.15) * t ** 3 * speed + rng.normal(0, 0.003))
        rows.append(dict(sae=f"{arch}_k{k}_s{s}", architecture=arch, sae_k=k, seed=s, n=n, dataset="ALL",
                         **{"class": "ALL"}, tpp_intended=intended, tpp_unintended=unintended,
                         tpp_total=intended - unintended))
    return pd.DataFrame(rows)


def _probing_summary(rng=None) -> pd.DataFrame:
    """Per-SAE sparse-probing summary as chapter 5 builds it (one row per SAE and seed)."""
    rng = rng or np.random.default_rng(2)
    rows = []
    llm = 0.9281
    for arch in ("topk", "vsae"):
        for k in (64, 128, 256, 512):
            for s in SEEDS:
                acc = 0.925 - (0.008 if arch == "vsae" else 0) - (0.01 if k == 512 else 0) + rng.normal(0, 0.004)
                r = dict(sae=f"{arch}_k{k}_s{s}", architecture=arch, sae_k=k, seed=s, llm_test_accuracy=llm,
                         sae_test_accuracy=acc, preservation=acc / llm)
                for pk, base in ((1, 0.81), (2, 0.84), (5, 0.875)):
                    a = base + rng.normal(0, 0.02)
                    r[f"sae_top_{pk}_test_accuracy"] = a
                    r[f"top_{pk}_preservation"] = a / (base + 0.1)
                rows.append(r)
    df = pd.DataFrame(rows)
    df["run"] = df.architecture.map(paper.ARCH_LABEL) + " k=" + df.sae_k.astype(str)
    return df


def _feature_frame(n=600, n_clusters=10, rng=None) -> pd.DataFrame:
    rng = rng or np.random.default_rng(3)
    centres = rng.uniform(-50, 50, size=(n_clusters, 2))
    c = rng.integers(0, n_clusters, n)
    xy = centres[c] + rng.normal(0, 6, size=(n, 2))
    return pd.DataFrame({"latent": np.arange(n), "x": xy[:, 0], "y": xy[:, 1], "cluster": c,
                         "utilization": rng.beta(1, 12, n), "mean_activation": rng.gamma(3, 1.0, n)})


def _token_frame(n=3000, with_source=True, rng=None) -> pd.DataFrame:
    rng = rng or np.random.default_rng(4)
    sources = np.array(["speech_pre1900", "speech_1900on", "novel", "email", "docs", "code"])
    src = rng.choice(sources, n, p=[0.25, 0.2, 0.2, 0.15, 0.12, 0.08])
    centre = {s: rng.uniform(-80, 80, 2) for s in sources}
    xy = np.array([centre[s] for s in src]) + rng.normal(0, 25, size=(n, 2))
    df = pd.DataFrame({"x": xy[:, 0], "y": xy[:, 1], "token_index": np.arange(n), "l0": rng.integers(200, 257, n)})
    if with_source:
        df["source"] = src
    return df


def _beyond_summary() -> pd.DataFrame:
    return pd.DataFrame([
        dict(sae="TopK", architecture="topk", k=256, frac_alive=1.0, explained_variance=0.7892, ce_loss_score=0.9562,
             tpp_total_20=0.0433, tpp_unintended_20=0.0028),
        dict(sae="TopK + AuxK (dead after 3,600 tokens)", architecture="topk", k=256, frac_alive=1.0,
             explained_variance=0.7892, ce_loss_score=0.9562, tpp_total_20=0.0433, tpp_unintended_20=0.0028),
        dict(sae="vSAE fixed var (code)", architecture="vsae", k=256, frac_alive=0.1914, explained_variance=0.7768,
             ce_loss_score=0.9455, tpp_total_20=0.2976, tpp_unintended_20=0.0158),
        dict(sae="vSAE unit var (blog)", architecture="vsae", k=256, frac_alive=0.7971, explained_variance=-0.3585,
             ce_loss_score=-0.5181, tpp_total_20=0.0, tpp_unintended_20=0.0),
        dict(sae="TopK + L2 pre-act penalty", architecture="topk", k=256, frac_alive=1.0, explained_variance=0.7931,
             ce_loss_score=0.9495, tpp_total_20=0.0104, tpp_unintended_20=0.0012),
    ])


# --------------------------------------------------------------------------------------------- #
# tests
# --------------------------------------------------------------------------------------------- #
def test_architecture_diagram_text_fits_its_boxes(out_dir):
    fig = plotting.architecture_diagram()
    _save(fig, out_dir, "architecture")
    renderer = fig.canvas.get_renderer()
    fig_bb = fig.bbox
    patches = [p for ax in fig.axes for p in ax.patches]
    assert len(patches) == 10  # five boxes per architecture
    boxes = [p.get_window_extent(renderer) for p in patches]
    for ax in fig.axes:
        for t in ax.texts:
            if not t.get_text().strip():
                continue
            bb = t.get_window_extent(renderer)
            # nothing leaves the figure
            assert bb.x0 >= fig_bb.x0 - 1 and bb.x1 <= fig_bb.x1 + 1 and bb.y0 >= fig_bb.y0 - 1 and bb.y1 <= fig_bb.y1 + 1, t.get_text()
            # a text inside a box lies wholly inside it
            cx, cy = (bb.x0 + bb.x1) / 2, (bb.y0 + bb.y1) / 2
            for b in boxes:
                if b.x0 <= cx <= b.x1 and b.y0 <= cy <= b.y1:
                    assert b.x0 <= bb.x0 and bb.x1 <= b.x1 and b.y0 <= bb.y0 and bb.y1 <= b.y1, t.get_text()
    for b in boxes:
        assert b.x0 >= fig_bb.x0 and b.x1 <= fig_bb.x1


def test_scr_1x4_legible(out_dir):
    scr_all = _scr_all()
    ps = paper.paper_results("scr")
    ps["sae"] = ps.architecture.map(paper.ARCH_LABEL) + " k=" + ps.k.astype(str)
    fig = plotting.scr_1x4(scr_all, paper=ps)
    _save(fig, out_dir, "scr")
    _assert_labelled(fig)
    line_axes = [ax for ax in fig.axes if ax.get_xscale() == "log"]
    assert len(line_axes) == 6  # 2 k x (metric, dir1, dir2)
    # direction 2 of k=512 is blown up: a symmetric-log axis, not a linear one stretched to the extreme
    d2 = [ax for ax in line_axes if ax.get_title().startswith("Dir. 2") and "512" in ax.get_title()][0]
    assert d2.get_yscale() == "symlog"
    # the heatmap has a colourbar
    assert any(ax.get_label() == "<colorbar>" or ax.get_ylabel() == "SCR metric" for ax in fig.axes)
    # without the paper the figure is drawn too
    _save(plotting.scr_1x4(scr_all), out_dir, "scr_no_paper")


def test_tpp_1x4_legible(out_dir):
    tpp_all = _tpp_all()
    pt = paper.paper_results("tpp")
    fig = plotting.tpp_1x4(tpp_all, paper=pt)
    _save(fig, out_dir, "tpp")
    _assert_labelled(fig)
    sel = [ax for ax in fig.axes if ax.get_title().startswith("Selectivity share")]
    assert len(sel) == 2
    lo, hi = sel[0].get_ylim()
    assert -0.2 < lo and hi < 1.3  # bounded: no near-zero denominators
    fig = plotting.tpp_1x4(tpp_all, paper=pt, selectivity="ratio")
    _save(fig, out_dir, "tpp_ratio")
    assert [ax for ax in fig.axes if ax.get_title().startswith("Selectivity ratio")][0].get_yscale() == "log"
    with pytest.raises(ValueError):
        plotting.tpp_1x4(tpp_all, selectivity="nope")


def test_probing_2x2_paper_and_zoom(out_dir):
    summary = _probing_summary()
    fig = plotting.probing_2x2(summary)  # the notebook's current call
    _save(fig, out_dir, "sparse_probing_no_paper")
    _assert_labelled(fig)
    fig = plotting.probing_2x2(summary, paper=paper.paper_results("sparse_probing"))
    _save(fig, out_dir, "sparse_probing")
    _assert_labelled(fig)
    pres = fig.axes[1]
    lo, hi = pres.get_ylim()
    assert lo > 0.3, "the preservation axis is zoomed to the data, not forced to 0-1"
    # the paper's values are drawn as open markers
    open_markers = [ln for ax in fig.axes for ln in ax.lines if ln.get_markerfacecolor() == "none"]
    assert len(open_markers) >= 4
    legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend()]
    assert any("paper" in t.get_text() for lg in legends for t in lg.get_texts())


def test_variant_bars_flags_identical_runs(out_dir):
    summary = _beyond_summary()
    names = ["TopK", "TopK + AuxK (dead after 3,600 tokens)"]
    fig = plotting.variant_bars(summary, names, "TopK with AuxK off in effect vs firing")
    _save(fig, out_dir, "beyond_auxk")
    _assert_labelled(fig)
    texts = [t.get_text() for ax in fig.axes for t in ax.texts] + [t.get_text() for t in fig.texts]
    assert sum(t == "identical" for t in texts) == 4
    assert any("identical values" in t for t in fig.texts for t in [t.get_text()])
    assert any("0.7892" in t for t in texts)  # value labels on the bars
    names = ["vSAE fixed var (code)", "vSAE unit var (blog)", "TopK + L2 pre-act penalty"]
    fig = plotting.variant_bars(summary, names, "vSAE as the code trained it vs as the text describes it")
    _save(fig, out_dir, "beyond_text_vs_code")
    assert not any("identical values" in t.get_text() for t in fig.texts)


def test_feature_tsne_panels_labels_do_not_overlap(out_dir):
    fig = plotting.feature_tsne_panels(_feature_frame(), "topk_k256", "topk")
    _save(fig, out_dir, "feature_tsne_topk_k256")
    _assert_labelled(fig)
    renderer = fig.canvas.get_renderer()
    bar_ax = fig.axes[-1] if fig.axes[-1].get_title() == "utilisation per cluster" else \
        [a for a in fig.axes if a.get_title() == "utilisation per cluster"][0]
    assert not bar_ax.texts  # counts live in the tick labels, not over the bars
    labels = [t.get_window_extent(renderer) for t in bar_ax.get_xticklabels()]
    for a, b in zip(labels, labels[1:]):
        assert a.x1 <= b.x0 + 0.5
    # cluster numbers on the map do not overlap even when the clusters crowd together
    feat = _feature_frame(n_clusters=10, rng=np.random.default_rng(7))
    feat[["x", "y"]] *= 0.15
    fig = plotting.feature_tsne_panels(feat, "vsae_k256", "vsae")
    _save(fig, out_dir, "feature_tsne_crowded")
    renderer = fig.canvas.get_renderer()
    tags = [t.get_window_extent(renderer) for t in fig.axes[0].texts if t.get_text().strip()]
    assert len(tags) == 10
    for i, a in enumerate(tags):
        for b in tags[i + 1:]:
            assert not (a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1)


def test_token_tsne_panels_colour_by_source(out_dir):
    emb = {"topk_k256": _token_frame(), "vsae_k256": _token_frame(rng=np.random.default_rng(5))}
    arch_of = {"topk_k256": "topk", "vsae_k256": "vsae"}
    fig = plotting.token_tsne_panels(emb, arch_of)
    _save(fig, out_dir, "token_tsne")
    _assert_labelled(fig)
    assert fig.legends and "source" in fig.legends[0].get_title().get_text()
    # without the column (the current t-SNE frame) it falls back to colouring by l0
    emb2 = {n: df.drop(columns="source") for n, df in emb.items()}
    fig = plotting.token_tsne_panels(emb2, arch_of)
    _save(fig, out_dir, "token_tsne_no_source")
    assert not fig.legends
    assert any(ax.get_label() == "<colorbar>" and "latents" in ax.get_ylabel() for ax in fig.axes)
    fig = plotting.token_tsne_panels(emb, arch_of, color_by=None)
    assert not fig.legends


def _ladder_table():
    rng = np.random.default_rng(0)
    rows = []
    for side in ("vsae", "topk"):
        for rung in ("recipe", "kl", "init", "lr"):
            base = 0.24 if side == "vsae" else 1.0
            if side == "vsae" and rung == "init":
                base = 0.99
            for seed in SEEDS:
                rows.append({"side": side, "rung": rung, "seed": seed, "frac_alive": base + 0.005 * rng.standard_normal(),
                             "explained_variance_saebench": 0.89 + 0.01 * rng.standard_normal(),
                             "ce_loss_score": 0.95 + 0.01 * rng.standard_normal(),
                             "tpp_total_20": (0.3 if side == "vsae" else 0.04) if seed == 42 else np.nan})
    return pd.DataFrame(rows)


def test_ladder_bars_one_bar_per_run_with_intervals(out_dir):
    t = _ladder_table()
    fig = plotting.ladder_bars(t)
    _save(fig, out_dir, "attribution_ladder")
    axes = _data_axes(fig)  # shared y axis: the run names and the y label sit on the first panel
    assert axes[0].get_ylabel() and all(ax.get_xlabel() for ax in axes)
    assert len(axes) == 4
    labels = [tl.get_text() for tl in axes[0].get_yticklabels()]
    assert labels == ["vSAE", "vSAE − kl", "vSAE − init", "vSAE − lr", "TopK", "TopK + kl", "TopK + init", "TopK + lr"][::-1] \
        or labels == ["vSAE", "vSAE − kl", "vSAE − init", "vSAE − lr", "TopK", "TopK + kl", "TopK + init", "TopK + lr"]
    assert len(axes[0].patches) == 8  # one bar per run
    assert any(abs(float(tx.get_text()) - 0.99) < 0.02 for tx in axes[0].texts)  # value labels


def test_sigma_sweep_marks_the_reference_and_one_coordinates_rms(out_dir):
    df = pd.DataFrame({"noise_scale": [0.01, 0.03, 0.1, 0.3, 1.0], "frac_alive": [0.3, 0.32, 0.4, 0.6, 0.9],
                       "explained_variance": [0.85, 0.84, 0.7, 0.3, -0.36], "ce_loss_score": [0.95, 0.94, 0.9, 0.7, 0.2],
                       "tpp_total_20": [0.2, 0.2, 0.1, 0.05, 0.01]})
    ref = pd.Series({"frac_alive": 0.24, "explained_variance": 0.86, "ce_loss_score": 0.95, "tpp_total_20": 0.3})
    fig = plotting.sigma_sweep(df, 576, ref)
    _save(fig, out_dir, "beyond_sigma_sweep")
    _assert_labelled(fig)
    ax = _data_axes(fig)[0]
    assert ax.get_xscale() == "log"
    xs = [ln.get_xdata()[0] for ln in ax.lines if len(set(np.atleast_1d(ln.get_xdata()))) == 1]
    assert any(abs(x - 1 / 24) < 1e-9 for x in xs)  # the dotted RMS line at 1/sqrt(576)


def test_convergence_curves_window_and_labels(out_dir):
    from vsae import convergence

    rows = []
    for arch, alive in (("topk", 0.0), ("vsae", 0.6)):
        for seed in SEEDS:
            for t in range(9600, 1_920_001, 9600 * 10):
                rows.append({"architecture": arch, "budget": "paper", "seed": seed, "tokens": t, "mse": 1.0 / (1 + t / 1e5),
                             "ev": 1 - 1.0 / (1 + t / 1e5), "l0": 256, "frac_inactive": alive * min(1, t / 1e6)})
    fig = plotting.convergence_curves(convergence.curves(pd.DataFrame(rows)), mark_tokens=288_000, window_tokens=100_000)
    _save(fig, out_dir, "convergence")
    _assert_labelled(fig)
    axes = _data_axes(fig)
    assert axes[0].get_ylabel() == "fraction of latents silent\nfor the last 100,000 tokens"
    # before the window the silent fraction is 0 by construction: not drawn
    assert min(min(ln.get_xdata()) for ln in axes[0].lines if len(ln.get_xdata()) > 1) >= 0.1
    assert axes[2].get_yscale() == "log"
    # shorter runs than the window: the panel says so
    short = pd.DataFrame([r for r in rows if r["tokens"] < 100_000])
    fig = plotting.convergence_curves(convergence.curves(short), window_tokens=100_000)
    assert "shorter" in _data_axes(fig)[0].texts[0].get_text()

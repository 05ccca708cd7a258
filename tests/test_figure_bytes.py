"""Every figure renders to the same PNG bytes on re-execution: twice in one process, and in two processes
with different ``PYTHONHASHSEED`` (so no colour, order or label placement hangs on set or dict order
of strings). The t-SNE views are computed here too (seeded t-SNE and k-means, one thread), from a
small synthetic code sample, so the whole path from codes to PNG is covered. Synthetic inputs are those
of tests/test_plotting.py, shaped like the chapters' real ones. A few seconds per process.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

HERE = Path(__file__).resolve().parent


def _code_sample(n: int = 500, d_sae: int = 64, k: int = 6):
    from vsae.latent import CodeSample

    rng = np.random.default_rng(11)
    codes = np.zeros((n, d_sae), dtype=np.float32)
    for i in range(n):  # tokens of three kinds, each firing its own block of latents more often
        kind = i % 3
        p = np.full(d_sae, 0.2)
        p[kind * 20:(kind + 1) * 20] = 3.0
        idx = rng.choice(d_sae, k, replace=False, p=p / p.sum())
        codes[i, idx] = rng.gamma(2.0, 1.0, k)
    density = (codes != 0).mean(0)
    latents = np.flatnonzero(density > 0.01)
    return CodeSample(codes[:, latents], latents, density, np.arange(n)), np.array(["speech", "novel", "email"])[np.arange(n) % 3]


def _core_runs() -> pd.DataFrame:
    rng = np.random.default_rng(12)
    rows = []
    for arch in ("topk", "vsae"):
        for k in (8, 16, 32, 64):
            for s in (42, 43):
                rows.append(dict(architecture=arch, k=k, seed=s, l0=k * (1 - 0.1 * (arch == "vsae")),
                                 explained_variance=0.5 + 0.1 * np.log2(k) / 6 + rng.normal(0, 0.01),
                                 ce_loss_score=0.8 + rng.normal(0, 0.02), cossim=0.7 + rng.normal(0, 0.01),
                                 frac_alive=0.9 - 0.3 * (arch == "vsae") + rng.normal(0, 0.02)))
    return pd.DataFrame(rows)


def figures() -> dict:
    """``name -> callable returning a Figure``, one per figure function of :mod:`vsae.plotting` whose
    inputs are easy to fake (the chapters' t-SNE figures computed from codes)."""
    sys.path.insert(0, str(HERE))
    import test_plotting as tp

    from vsae import latent, paper, plotting

    sample, sources = _code_sample()
    arch_of = {"topk_k32": "topk", "vsae_k32": "vsae", "topk_k8": "topk", "vsae_k8": "vsae"}

    def token_tsne():
        emb = latent.token_tsne(sample, seed=42, max_iter=250).assign(source=sources)
        return plotting.token_tsne_panels({"topk_k32": emb, "vsae_k32": emb.iloc[::-1]}, arch_of)

    def feature_tsne():
        return plotting.feature_tsne_panels(latent.feature_tsne(sample, seed=42, max_iter=250), "topk_k32", "topk")

    rng = np.random.default_rng(13)
    density = pd.DataFrame({"sae": np.repeat(["topk_k8", "vsae_k8"], 64),
                            "density": np.where(rng.random(128) < 0.2, 0.0, rng.beta(1, 20, 128))})
    curves = {r: pd.DataFrame({"tokens": [64, 256, 1024, 4096], "frac_alive": np.sort(rng.uniform(0.2, 1.0, 4))})
              for r in ("topk_k8", "vsae_k8", "topk_k32", "vsae_k32")}
    hists = {r: pd.DataFrame({"bin_left": np.linspace(-1, 0.98, 100), "bin_right": np.linspace(-0.98, 1, 100),
                              "count": rng.integers(1, 100, 100)}) for r in ("topk_k8", "vsae_k8")}
    logs = pd.DataFrame([dict(run=f"{a}_k{k}", architecture=a, k=k, tokens=t, loss=1 / (1 + t / 1000) + k / 100,
                              mse=0.5 / (1 + t / 1000), kl=0.1 * (a == "vsae"), l0=k, frac_inactive=0.1)
                         for a in ("topk", "vsae") for k in (8, 32) for t in range(0, 20_000, 1000)])
    core = _core_runs()
    norms = rng.gamma(9, 2, 2000)
    return {
        "architecture": plotting.architecture_diagram,
        "activation_norms": lambda: plotting.activation_norms(norms, 18.0, "blocks.3.hook_resid_post"),
        "training_curves": lambda: plotting.training_curves(logs, columns=("loss", "mse", "kl", "l0", "frac_inactive")),
        "core_overview": lambda: plotting.metrics_vs_k(core, ["ce_loss_score", "explained_variance", "cossim", "frac_alive"]),
        "pareto": lambda: plotting.pareto(core),
        "alive_vs_tokens": lambda: plotting.alive_vs_tokens(curves, arch_of),
        "density": lambda: plotting.density_histogram(density, ["topk_k8", "vsae_k8"], arch_of),
        "sparse_probing": lambda: plotting.probing_2x2(tp._probing_summary(), paper=paper.paper_results("sparse_probing")),
        "scr": lambda: plotting.scr_1x4(tp._scr_all()),
        "tpp": lambda: plotting.tpp_1x4(tp._tpp_all()),
        "token_tsne": token_tsne,
        "feature_tsne_topk_k32": feature_tsne,
        "decoder_cosines": lambda: plotting.cosine_distributions(hists, arch_of),
        "beyond_auxk": lambda: plotting.variant_bars(tp._beyond_summary(), ["TopK", "TopK + AuxK (dead after 3,600 tokens)"],
                                                     "TopK with AuxK off in effect vs firing"),
        "attribution_ladder": lambda: plotting.ladder_bars(tp._ladder_table()),
        "beyond_sigma_sweep": lambda: plotting.sigma_sweep(
            pd.DataFrame({"noise_scale": [0.01, 0.1, 1.0], "frac_alive": [0.3, 0.4, 0.9], "explained_variance": [0.85, 0.7, -0.36],
                          "ce_loss_score": [0.95, 0.9, 0.2], "tpp_total_20": [0.2, 0.1, 0.01]}), 576,
            pd.Series({"frac_alive": 0.24, "explained_variance": 0.86, "ce_loss_score": 0.95, "tpp_total_20": 0.3})),
    }


def render_all(folder: Path | None = None) -> dict[str, str]:
    """sha256 of every figure as :func:`vsae.plotting.savefig` writes it (into ``folder``, else a
    temporary one). Each figure is drawn afresh, as a chapter does, and saved once (a second render
    of the same Figure object may differ: layout engines adjust it)."""
    import tempfile

    from vsae import plotting

    plotting.setup()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(folder or tmp)
        out = {}
        for name, make in figures().items():
            plotting.savefig(make(), name, folder)
            out[name] = hashlib.sha256((folder / f"{name}.png").read_bytes()).hexdigest()
    return out


def test_every_figure_renders_to_the_same_bytes_twice(tmp_path):
    """Each figure drawn here and again in a fresh process with another string-hash seed (and the
    default thread counts): the same bytes, and savefig leaves an unchanged file untouched."""
    first = render_all(tmp_path)
    assert len(first) >= 14
    mtimes = {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("*.png")}
    png = (tmp_path / "token_tsne.png").read_bytes()
    assert b"tEXt" not in png and b"iTXt" not in png and b"tIME" not in png, "PNG metadata chunks must be stripped"
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    seed = "1" if os.environ.get("PYTHONHASHSEED") == "0" else "0"
    p = subprocess.run([sys.executable, __file__, str(tmp_path)], env={**env, "PYTHONHASHSEED": seed},
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    second = json.loads(p.stdout.strip().splitlines()[-1])
    differ = sorted(n for n in first if first[n] != second.get(n))
    assert not differ, f"figures whose bytes differ on re-execution: {differ}"
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("*.png")} == mtimes, "an unchanged figure was rewritten"


if __name__ == "__main__":
    print(json.dumps(render_all(Path(sys.argv[1]) if len(sys.argv) > 1 else None)))

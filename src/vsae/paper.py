"""The paper's reported numbers, read from ``data/paper_results.csv`` (never typed into a chapter).

Citation: Z. Baker and Y. Li, *Analysis of Variational Sparse Autoencoders*, arXiv:2509.22994 (2025);
values from the authors' repository ZachData/SPAR-Variational-Sparse-Autoencoders @ 8e1581a.
"""

from __future__ import annotations

from functools import lru_cache

import pandas as pd

from .paths import REPO_ROOT

CITATION = (
    "Baker & Li, Analysis of Variational Sparse Autoencoders, arXiv:2509.22994 (2025); "
    "authors' SAE Bench tables at ZachData/SPAR-Variational-Sparse-Autoencoders@8e1581a"
)
PAPER_CSV = REPO_ROOT / "data" / "paper_results.csv"
ARCH_LABEL = {"topk": "TopK", "vsae": "vSAE"}


@lru_cache(maxsize=1)
def _load() -> pd.DataFrame:
    if not PAPER_CSV.exists():
        raise FileNotFoundError(f"{PAPER_CSV} is missing: it ships with the repository; restore it with git checkout")
    df = pd.read_csv(PAPER_CSV)
    df["n_ablated"] = df["n_ablated"].astype("Int64")
    return df


def paper_results(eval: str | None = None, model: str = "pythia-70m-deduped") -> pd.DataFrame:
    """Tidy paper values: columns model, eval, metric, architecture, k, n_ablated, value."""
    df = _load()
    df = df[df["model"] == model]
    if eval is not None:
        if eval not in set(df["eval"]):
            raise ValueError(f"unknown eval {eval!r}; the paper reports {sorted(set(df['eval']))}")
        df = df[df["eval"] == eval]
    return df.reset_index(drop=True).copy()


def paper_value(eval: str, metric: str, architecture: str, k: int, n_ablated: int | None = None,
                model: str = "pythia-70m-deduped") -> float:
    """One reported number (raises ``KeyError`` if the paper does not report it)."""
    df = paper_results(eval, model)
    sel = (df.metric == metric) & (df.architecture == architecture) & (df.k == k)
    if n_ablated is not None:
        sel &= df.n_ablated == n_ablated
    hit = df[sel]
    if len(hit) != 1:
        raise KeyError(f"paper reports no single value for {eval}/{metric}/{architecture}/k={k}/N={n_ablated}")
    return float(hit["value"].iloc[0])


def core_table(model: str = "pythia-70m-deduped") -> pd.DataFrame:
    """The paper's core table: metrics as rows, one column per SAE (e.g. ``TopK k=64``)."""
    df = paper_results("core", model)
    df["sae"] = df.architecture.map(ARCH_LABEL) + " k=" + df.k.astype(str)
    order = [f"{ARCH_LABEL[a]} k={k}" for a in ("topk", "vsae") for k in sorted(df.k.unique())]
    return df.pivot(index="metric", columns="sae", values="value")[order]

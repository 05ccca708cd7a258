"""SAE Bench's sparse probing (``sae_bench/evals/sparse_probing``), on a :class:`PassagePool`.

For every binary task of every probing dataset:

* inputs are mean-pooled over the non-special tokens of each passage (at most ``ctx_len`` tokens):
  the residual itself for the LLM baseline, and the SAE code of *each token* averaged over the
  passage for the SAE (``get_sae_meaned_activations``);
* **top-k probes** (k in {1, 2, 5}): the k dimensions with the largest |mean(pos) - mean(neg)| on the
  training split, then scikit-learn's ``LogisticRegression`` (L2, C=1, max_iter=1000); test accuracy;
* **full probe** on all dimensions: SAE Bench trains it with torch (AdamW, lr 1e-2, batch 250, 100
  epochs, early stopping with patience 10) and keeps the epoch with the best *test* accuracy; the
  same here (``full_probe="sklearn"`` swaps in a logistic regression instead).

The per-dataset score is the mean over its binary tasks, and the overall score the mean over
datasets (SAE Bench's ``average_results_dictionaries``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch

from .common import top_k_mean_diff, train_sklearn_probe, train_torch_probe
from .tasks import BinaryTask, PassagePool, ProbeDataset, binary_tasks


@dataclass(frozen=True)
class SparseProbingConfig:
    k_values: tuple[int, ...] = (1, 2, 5)
    #: how the all-dimensions probe is trained: "torch" (SAE Bench) or "sklearn"
    full_probe: str = "torch"
    full_epochs: int = 100
    full_batch_size: int = 250
    full_lr: float = 1e-2
    full_patience: int = 10
    sklearn_max_iter: int = 1000
    C: float = 1.0
    seed: int = 42

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["k_values"] = list(self.k_values)
        return d


def probe_accuracies(x_train, y_train, x_test, y_test, cfg: SparseProbingConfig = SparseProbingConfig()) -> dict:
    """Test accuracy of the full probe (key ``None``) and of each top-k probe (key ``k``)."""
    x_train = np.asarray(x_train, dtype=np.float32)
    x_test = np.asarray(x_test, dtype=np.float32)
    y_train = np.asarray(y_train).astype(int)
    y_test = np.asarray(y_test).astype(int)
    out: dict = {}
    if cfg.full_probe == "torch":
        _, acc = train_torch_probe(
            torch.as_tensor(x_train), torch.as_tensor(y_train), torch.as_tensor(x_test), torch.as_tensor(y_test),
            epochs=cfg.full_epochs, lr=cfg.full_lr, batch_size=cfg.full_batch_size, patience=cfg.full_patience,
            seed=cfg.seed,
        )
        out[None] = acc
    elif cfg.full_probe == "sklearn":
        out[None] = train_sklearn_probe(x_train, y_train, x_test, y_test, max_iter=cfg.sklearn_max_iter, C=cfg.C)
    else:
        raise ValueError(f"full_probe must be 'torch' or 'sklearn', not {cfg.full_probe!r}")
    for k in cfg.k_values:
        dims = top_k_mean_diff(x_train, y_train, k)
        out[int(k)] = train_sklearn_probe(x_train[:, dims], y_train, x_test[:, dims], y_test,
                                          max_iter=cfg.sklearn_max_iter, C=cfg.C)
    return out


def _tasks(pool: PassagePool, datasets: Sequence[ProbeDataset] | None, seed: int) -> list[BinaryTask]:
    if datasets is None:
        if pool.suite is None:
            raise ValueError("the pool has no task suite; pass datasets=")
        datasets = pool.suite.probing
    return [t for ds in datasets for t in binary_tasks(ds, seed)]


def llm_baseline(pool: PassagePool, datasets=None, cfg: SparseProbingConfig = SparseProbingConfig()) -> pd.DataFrame:
    """The residual-stream probes: one row per (dataset, task, k)."""
    X = pool.pooled_resid
    rows = []
    for t in _tasks(pool, datasets, cfg.seed):
        acc = probe_accuracies(X[t.train_idx], t.train_y, X[t.test_idx], t.test_y, cfg)
        for k, a in acc.items():
            rows.append({"dataset": t.dataset, "task": t.name, "k": k, "llm_accuracy": a})
    return pd.DataFrame(rows)


def run_sparse_probing(
    saes: dict[str, Any],
    pool: PassagePool,
    datasets: Sequence[ProbeDataset] | None = None,
    cfg: SparseProbingConfig = SparseProbingConfig(),
    llm: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Sparse probing of each SAE beside the LLM baseline.

    Returns a tidy table, one row per (sae, dataset, task, k) with ``accuracy`` (the SAE probe) and
    ``llm_accuracy`` (the same probe on the residual stream); ``k`` is ``<NA>`` for the probe on all
    dimensions. Rows with ``dataset == "ALL"`` hold the mean over datasets of each dataset's mean over
    its tasks (SAE Bench's aggregate).
    """
    tasks = _tasks(pool, datasets, cfg.seed)
    if llm is None:
        llm = llm_baseline(pool, datasets, cfg)
    llm_map = {(r.dataset, r.task, r.k if pd.notna(r.k) else None): r.llm_accuracy for r in llm.itertuples()}
    rows = []
    for name, sae in saes.items():
        Z = pool.pooled_codes(sae)
        for t in tasks:
            acc = probe_accuracies(Z[t.train_idx], t.train_y, Z[t.test_idx], t.test_y, cfg)
            for k, a in acc.items():
                rows.append({"sae": name, "dataset": t.dataset, "task": t.name, "k": k,
                             "n_train": len(t.train_idx), "n_test": len(t.test_idx),
                             "accuracy": a, "llm_accuracy": llm_map.get((t.dataset, t.name, k), np.nan)})
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    df["k"] = df["k"].astype("Int64")
    key = df["k"].fillna(-1)
    per_ds = df.assign(_k=key).groupby(["sae", "dataset", "_k"], as_index=False)[["accuracy", "llm_accuracy"]].mean()
    agg = per_ds.groupby(["sae", "_k"], as_index=False)[["accuracy", "llm_accuracy"]].mean()
    agg["dataset"], agg["task"] = "ALL", "mean"
    agg["k"] = agg["_k"].where(agg["_k"] >= 0).astype("Int64")
    out = pd.concat([df, agg.drop(columns="_k")], ignore_index=True)
    out["probe"] = np.where(out["k"].isna(), "all", "top_k")
    return out[["sae", "dataset", "task", "probe", "k", "accuracy", "llm_accuracy", "n_train", "n_test"]]


def summarise_sparse_probing(df: pd.DataFrame) -> pd.DataFrame:
    """One row per SAE with SAE Bench's metric names and the preservation ratios (SAE / LLM)."""
    agg = df[df["dataset"] == "ALL"]
    rows = []
    for sae, g in agg.groupby("sae", sort=False):
        r = {"sae": sae}
        for _, x in g.iterrows():
            tag = "" if pd.isna(x["k"]) else f"_top_{int(x['k'])}"
            r[f"sae{tag}_test_accuracy"] = x["accuracy"]
            r[f"llm{tag}_test_accuracy"] = x["llm_accuracy"]
            r[f"preservation{tag}"] = x["accuracy"] / x["llm_accuracy"] if x["llm_accuracy"] else np.nan
        rows.append(r)
    return pd.DataFrame(rows)

"""Do the headline budget's conclusions hold at the paper's training budget?

The offline book trains its headline SAEs for :attr:`vsae.profiles.Profile.steps` steps (1,500 at the
offline profile, 15% of the paper's 10,001). :meth:`vsae.pipeline.Experiment.convergence` trains TopK and
the vSAE at one k for both budgets, at every seed, on one training cache of the paper's 1.92M tokens
(so the long runs see fresh tokens, as the authors' buffer does), and evaluates both with the core
metrics. This module reads those results:

- :func:`budget_comparison`: per budget and metric, TopK against the vSAE with each side's seed interval,
  the Welch interval of the difference and the verdict of :func:`vsae.verdicts.compare`;
- :func:`budget_sentence`: whether each metric's verdict at the headline budget is the same at the
  paper's (a verdict that changes is reported as plainly as one that holds);
- :func:`curves`: the training-log quantities against training tokens, averaged over seeds.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from . import stats, verdicts

#: core metrics compared across budgets (higher is better for all)
METRICS = ("frac_alive", "explained_variance", "explained_variance_saebench", "cossim", "ce_loss_score", "kl_div_score")
#: how the chapters name :data:`METRICS` in the comparison's table and sentence
METRIC_LABELS = {"frac_alive": "fraction alive", "explained_variance": "explained variance (conventional)",
                 "explained_variance_saebench": "explained variance (SAE Bench)", "cossim": "cosine",
                 "ce_loss_score": "CE-loss score", "kl_div_score": "KL-divergence score"}
#: training-log quantities of :func:`curves` (``frac_inactive``: latents silent for the trainer's window)
LOG_METRICS = ("mse", "ev", "l0", "frac_inactive")


def budget_comparison(core: pd.DataFrame, metrics: Sequence[str] = METRICS, confidence: float = 0.95) -> pd.DataFrame:
    """TopK vs vSAE per budget and metric.

    ``core``: one row per run with ``architecture`` (``topk`` / ``vsae``), ``budget`` (label),
    ``steps``, ``seed`` and the metric columns. Returns one row per (budget, metric): ``steps``,
    ``topk``, ``topk_half``, ``vsae``, ``vsae_half`` (means and t-interval half-widths over seeds),
    ``diff`` (TopK minus vSAE), ``diff_half`` (Welch), ``n_seeds`` and ``verdict`` of "TopK is higher"
    (:data:`vsae.verdicts.HOLDS`, ``REVERSED`` when the vSAE is higher, ``NOT_SEPARATED``).
    """
    missing = {"architecture", "budget", "steps", "seed", *metrics} - set(core.columns)
    if missing:
        raise ValueError(f"core table lacks columns {sorted(missing)}")
    rows = []
    for budget, g in core.groupby("budget", sort=False):
        t, v = g[g.architecture == "topk"], g[g.architecture == "vsae"]
        for m in metrics:
            r = verdicts.compare(t[m], v[m], expect="greater", confidence=confidence)
            rows.append({"budget": budget, "steps": int(g["steps"].iloc[0]), "metric": m,
                         "topk": r["mean_a"], "topk_half": r["half_a"], "vsae": r["mean_b"], "vsae_half": r["half_b"],
                         "diff": r["diff"], "diff_half": r["half"], "n_seeds": min(r["n_a"], r["n_b"]),
                         "verdict": r["verdict"]})
    return pd.DataFrame(rows)


def budget_wide(table: pd.DataFrame, digits: int = 3, labels: dict[str, str] | None = None) -> pd.DataFrame:
    """:func:`budget_comparison` as a readable table: one row per metric (named by ``labels``),
    ``mean ± half`` per side and budget, and per budget which side is separated above the other."""
    labels = labels or {}
    out = {}
    for budget, g in table.groupby("budget", sort=False):
        g = g.set_index("metric")
        steps = int(g["steps"].iloc[0])
        out[(f"{budget} ({steps:,} steps)", "TopK")] = [stats.fmt(a, h, digits) for a, h in zip(g.topk, g.topk_half)]
        out[(f"{budget} ({steps:,} steps)", "vSAE")] = [stats.fmt(a, h, digits) for a, h in zip(g.vsae, g.vsae_half)]
        out[(f"{budget} ({steps:,} steps)", "separated")] = [verdicts.LEADER[v] for v in g.verdict]
        index = [labels.get(m, m) for m in g.index]
    return pd.DataFrame(out, index=index)


def budget_sentence(table: pd.DataFrame, short: str, long: str,
                    labels: dict[str, str] | None = None) -> str:
    """Which metrics keep their TopK-vs-vSAE verdict from budget ``short`` to ``long``, and which change.

    Every metric is named once, with both verdicts and both differences; nothing is called "the same"
    unless both verdicts are equal.
    """
    labels = labels or {}
    t = table.set_index(["budget", "metric"])
    for b in (short, long):
        if b not in t.index.get_level_values(0):
            raise ValueError(f"budget {b!r} not in the table (budgets: {sorted(set(t.index.get_level_values(0)))})")
    same, changed = [], []
    for m in dict.fromkeys(table.metric):
        a, b = t.loc[(short, m)], t.loc[(long, m)]
        name = labels.get(m, m.replace("_", " "))
        text = (f"{name} (TopK − vSAE {a['diff']:+.3f} → {b['diff']:+.3f}; "
                f"{verdicts.LEADER[a['verdict']]} → {verdicts.LEADER[b['verdict']]})")
        (same if a["verdict"] == b["verdict"] else changed).append(text)
    steps = {b: int(t.loc[b]["steps"].iloc[0]) for b in (short, long)}
    n = int(table["n_seeds"].min())
    head = (f"From {steps[short]:,} to {steps[long]:,} training steps ({n} seed{'s' if n != 1 else ''} per run, "
            f"95% intervals), ")
    parts = []
    if same:
        parts.append("the verdict stays the same for " + "; ".join(same))
    if changed:
        parts.append("it **changes** for " + "; ".join(changed))
    return head + ", and ".join(parts) + "."


def curves(logs: pd.DataFrame, metrics: Sequence[str] = LOG_METRICS) -> pd.DataFrame:
    """Mean over seeds of each training-log quantity per (architecture, budget, tokens), with the
    spread (min, max) over seeds: long format ``architecture, budget, tokens, metric, mean, lo, hi``."""
    keep = [m for m in metrics if m in logs.columns]
    long = logs.melt(id_vars=["architecture", "budget", "seed", "tokens"], value_vars=keep, var_name="metric")
    g = long.groupby(["architecture", "budget", "metric", "tokens"], sort=False)["value"]
    out = g.agg(mean="mean", lo="min", hi="max").reset_index()
    return out[np.isfinite(out["mean"])].reset_index(drop=True)

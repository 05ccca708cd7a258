"""The paper's headline claims, checked against a set of results (ours or the paper's own tables).

Each claim is a function of tidy tables with the same columns whether they come from our runs or from
``data/paper_results.csv``; :func:`claims_table` evaluates every claim on both and says whether ours
agrees with the paper. Our tables hold several seeds (a ``seed`` column): each claim is evaluated on
the seed means *and* on every seed alone, and a claim survives the seed spread when every seed gives
the verdict the means give. The discussion chapter prints this table: no number in it is typed by hand.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import paper


def _wide(core: pd.DataFrame, metric: str) -> pd.DataFrame:
    """``core``: columns architecture, k, and ``metric``; returns k x architecture."""
    return core.pivot_table(index="k", columns="architecture", values=metric)


def claim_values(core: pd.DataFrame, probing: pd.DataFrame, scr: pd.DataFrame, tpp: pd.DataFrame) -> dict[str, tuple]:
    """``{claim: (value string, holds)}``.

    core: architecture, k, ce_loss_score, explained_variance, cossim, frac_alive (one row per SAE)
    probing: architecture, k, sae_test_accuracy, sae_top_1_test_accuracy
    scr: architecture, k, n, scr_metric;  tpp: architecture, k, n, tpp_total, tpp_unintended
    """
    out = {}
    for m, name in (("ce_loss_score", "CE-loss score"), ("explained_variance", "explained variance")):
        w = _wide(core, m)
        below = int((w["vsae"] < w["topk"]).sum())
        out[f"vSAE below TopK on {name} (k values)"] = (f"{below} of {len(w)}", below >= len(w) - 1)
    fa = _wide(core, "frac_alive")
    ratio = float((fa["topk"] / fa["vsae"].clip(lower=1e-9)).min())
    out["TopK keeps several times more latents alive (min ratio over k)"] = (f"{ratio:.1f}×", ratio >= 2)
    v = fa["vsae"].sort_index().to_numpy()
    out["vSAE feature death falls as k grows (frac alive increasing in k)"] = (
        " → ".join(f"{x:.3f}" for x in v), bool(np.all(np.diff(v) > 0)))
    pw = probing.pivot_table(index="k", columns="architecture", values="sae_test_accuracy")
    gap = float((pw["vsae"] - pw["topk"]).abs().max())
    out["sparse probing comparable (max |Δ accuracy| over k, all latents)"] = (f"{gap:.3f}", gap < 0.03)
    # several seeds: the curves are averaged over seeds before taking their best point
    scr = scr.groupby(["architecture", "k", "n"], as_index=False)["scr_metric"].mean()
    tpp = tpp.groupby(["architecture", "k", "n"], as_index=False)[["tpp_total", "tpp_unintended"]].mean()
    sb = scr.groupby("architecture")["scr_metric"].max()
    out["vSAE reaches a higher best SCR metric over N"] = (f"vSAE {sb['vsae']:.3f} vs TopK {sb['topk']:.3f}", sb["vsae"] > sb["topk"])
    small = tpp[tpp.n <= 20].groupby("architecture")["tpp_unintended"].mean()
    out["vSAE has smaller unintended TPP effects (mean over N ≤ 20)"] = (
        f"vSAE {small['vsae']:.4f} vs TopK {small['topk']:.4f}", small["vsae"] < small["topk"])
    large = tpp[tpp.n >= 50].groupby("architecture")["tpp_total"].max()
    out["vSAE has the higher best TPP total at large N (N ≥ 50)"] = (
        f"vSAE {large['vsae']:.3f} vs TopK {large['topk']:.3f}", large["vsae"] > large["topk"])
    return out


def paper_tables() -> tuple[pd.DataFrame, ...]:
    """The paper's tables in the shape :func:`claim_values` expects."""
    core = paper.paper_results("core").pivot_table(index=["architecture", "k"], columns="metric", values="value").reset_index()
    pr = paper.paper_results("sparse_probing").pivot_table(index=["architecture", "k"], columns="metric",
                                                          values="value").reset_index()
    scr = paper.paper_results("scr").rename(columns={"n_ablated": "n", "value": "scr_metric"})
    t = paper.paper_results("tpp").pivot_table(index=["architecture", "k", "n_ablated"], columns="metric",
                                               values="value").reset_index().rename(columns={"n_ablated": "n"})
    return core, pr, scr, t


def _seeds(*tables: pd.DataFrame) -> list:
    """Seeds present in every table (none when a table has no ``seed`` column)."""
    sets = [set(t["seed"].unique()) for t in tables if "seed" in t.columns]
    if len(sets) < len(tables):
        return []
    return sorted(set.intersection(*sets))


def claims_table(core: pd.DataFrame, probing: pd.DataFrame, scr: pd.DataFrame, tpp: pd.DataFrame) -> pd.DataFrame:
    """One row per claim: the paper's value, ours (on the seed means), whether each holds and ours
    agrees, and how many of our seeds alone give the same verdict as the means."""
    ours = claim_values(core, probing, scr, tpp)  # pivot tables average the seeds
    theirs = claim_values(*paper_tables())
    seeds = _seeds(core, probing, scr, tpp)
    per_seed = [claim_values(*(t[t["seed"] == s] for t in (core, probing, scr, tpp))) for s in seeds]
    rows = []
    for c in theirs:
        pv, ph = theirs[c]
        ov, oh = ours[c]
        row = {"claim": c, "paper": pv, "paper holds": bool(ph), "ours (seed mean)": ov, "ours holds": bool(oh),
               "reproduced": bool(ph) == bool(oh)}
        if per_seed:
            same = sum(bool(ps[c][1]) == bool(oh) for ps in per_seed)
            row["seeds agreeing"] = f"{same} of {len(per_seed)}"
            row["survives seeds"] = same == len(per_seed)
        rows.append(row)
    return pd.DataFrame(rows)

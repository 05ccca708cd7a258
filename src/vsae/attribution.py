"""Attribution of the TopK-vSAE gap to the recipe differences between the two SAEs.

The paper's two SAEs differ in more than the KL term (:data:`vsae.design.LADDER_DIFFERENCES`). The
attribution ladder (:func:`vsae.design.ladder_variants`) trains each recipe with one difference flipped
to the other architecture's choice, so that for a metric m (fraction alive, say):

- the **gap** is ``m(TopK) - m(vSAE)``;
- on the vSAE side, a rung's **effect** is ``m(vSAE with difference d removed) - m(vSAE)`` and its
  **share** ``effect / gap``: the part of the gap that removing d closes;
- on the TopK side, the effect is ``m(TopK with the vSAE's d added) - m(TopK)`` and the share
  ``-effect / gap``: the part of the gap that adding d opens;
- the **interaction check**: if the differences acted independently and additively, each side's
  shares would sum to 1; ``1 - sum`` is what the single flips leave unexplained.

Effects carry a 95% Welch interval over seeds and a verdict of the verdict engine
(:func:`vsae.verdicts.compare`): *holds* (positive, separated), *reversed* (negative, separated) or
*not separated*; with one seed per run a difference counts only beyond ``noise``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from . import verdicts

RECIPE = "recipe"


def ladder_table(summary: pd.DataFrame, ladder: dict[str, list], metrics: Sequence[str]) -> pd.DataFrame:
    """One row per ladder run: ``side`` (vsae | topk), ``rung`` (``recipe`` or the flipped difference),
    ``seed`` and the metrics, read from a per-run ``summary`` (column ``sae`` = the variants' names)."""
    S = summary.set_index("sae")
    rows = []
    for side, variants in ladder.items():
        for v in variants:
            rows.append({"side": v.role.get("side", side), "rung": v.role["rung"], "seed": v.seed, "sae": v.name,
                         **{m: float(S.loc[v.name, m]) for m in metrics}})
    return pd.DataFrame(rows)


def attribute(table: pd.DataFrame, metric: str, noise: float = 0.0, confidence: float = 0.95) -> pd.DataFrame:
    """Effect and share of each flipped difference on ``metric`` (see the module docstring).

    ``table``: :func:`ladder_table` rows. Returns one row per (side, difference) with ``recipe``,
    ``flipped`` (means over seeds), ``effect`` and its interval ``half`` (NaN for one seed),
    ``share`` of the gap, ``verdict`` of ``effect > 0``, and ``n_seeds``; ``attrs["gap"]`` holds the
    gap with its interval (``gap``, ``half``, ``verdict`` of TopK > vSAE).
    """
    rec = {s: table[(table.side == s) & (table.rung == RECIPE)][metric].to_numpy(float) for s in ("topk", "vsae")}
    g = verdicts.compare(rec["topk"], rec["vsae"], "greater", noise=noise, confidence=confidence)
    gap = g["diff"]
    rows = []
    for (side, rung), grp in table[table.rung != RECIPE].groupby(["side", "rung"], sort=False):
        r = verdicts.compare(grp[metric].to_numpy(float), rec[side], "greater", noise=noise, confidence=confidence)
        sign = 1.0 if side == "vsae" else -1.0
        share = sign * r["diff"] / gap if np.isfinite(gap) and abs(gap) > 1e-12 else np.nan
        rows.append({"side": side, "difference": rung, "n_seeds": int(len(grp)), "recipe": r["mean_b"],
                     "flipped": r["mean_a"], "effect": r["diff"], "half": r["half"], "share": share,
                     "verdict": r["verdict"]})
    out = pd.DataFrame(rows)
    out.attrs["gap"] = {"metric": metric, "topk": g["mean_a"], "vsae": g["mean_b"], "gap": gap, "half": g["half"],
                        "verdict": g["verdict"]}
    return out


def interaction(att: pd.DataFrame) -> dict[str, float]:
    """Per side, the sum of the single-flip shares and what they leave unexplained (``1 - sum``)."""
    out = {}
    for side, grp in att.groupby("side", sort=False):
        s = float(grp["share"].sum())
        out[side] = {"sum_of_shares": s, "unexplained": 1.0 - s}
    return out


def attribution_sentence(att: pd.DataFrame, label: str = "fraction alive") -> str:
    """What the ladder says, in words: the gap, the differences whose flip moves the metric
    (separated effects, largest share first), those that do not, and the interaction check."""
    g = att.attrs["gap"]
    seeds = int(att["n_seeds"].max()) if len(att) else 0
    gap_txt = f"{g['gap']:.3f}" + (f" ± {g['half']:.3f}" if np.isfinite(g["half"]) else "")
    lines = [f"**Gap in {label}** (TopK − vSAE, {seeds} seed{'s' if seeds != 1 else ''} per run): {gap_txt} "
             f"(TopK {g['topk']:.3f}, vSAE {g['vsae']:.3f}; {g['verdict']})."]
    inter = interaction(att)
    for side, what in (("vsae", "Removing from the vSAE"), ("topk", "Adding to TopK")):
        grp = att[att.side == side]
        if grp.empty:
            continue
        moved = grp[grp.verdict != verdicts.NOT_SEPARATED].sort_values("share", key=np.abs, ascending=False)
        still = grp[grp.verdict == verdicts.NOT_SEPARATED]
        parts = [f"{r.difference} ({r.share:+.0%} of the gap; {label} {r.recipe:.3f} → {r.flipped:.3f})"
                 for r in moved.itertuples()]
        txt = f"* **{what}** one difference at a time: " + ("; ".join(parts) if parts else "no single difference moves it")
        if len(still):
            txt += "; not separated: " + ", ".join(still["difference"])
        u = inter[side]
        txt += (f". The single flips add up to {u['sum_of_shares']:.0%} of the gap "
                f"({'they do not act additively: ' if abs(u['unexplained']) > 0.25 else ''}"
                f"{u['unexplained']:+.0%} unexplained).")
        lines.append(txt)
    return "\n".join(lines)

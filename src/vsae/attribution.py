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


# --------------------------------------------------------------------------- effects on other metrics
#: how an effect's verdict reads in a table: the flipped run is higher, lower, or not separated
EFFECT_MARK = {verdicts.HOLDS: "up", verdicts.REVERSED: "down", verdicts.NOT_SEPARATED: "n.s."}


def effects(table: pd.DataFrame, metrics: Sequence[str], noise: dict | None = None,
            confidence: float = 0.95) -> pd.DataFrame:
    """The effect of each flipped difference on each metric: :func:`attribute` per metric, long form
    (``side, difference, metric, recipe, flipped, effect, half, verdict, n_seeds``). Metrics whose
    values are missing for some seeds (the ablation metrics of non-main seeds) use the seeds they have;
    a metric with no values is skipped. Shares of the gap are left out: they mean something only for a
    metric whose gap the flips are meant to explain (fraction alive), not for one whose gap is small."""
    rows = []
    for m in metrics:
        t = table[np.isfinite(table[m].to_numpy(float))]
        if t.empty:
            continue
        att = attribute(t, m, noise=(noise or {}).get(m, 0.0), confidence=confidence)
        rows.append(att.drop(columns=["share"]).assign(metric=m))
    cols = ["side", "difference", "metric", "recipe", "flipped", "effect", "half", "verdict", "n_seeds"]
    return pd.concat(rows, ignore_index=True)[cols] if rows else pd.DataFrame(columns=cols)


def _pm(x: float, half: float, digits: int = 3) -> str:
    """``"+0.030 ± 0.001"`` (signed value and 95% half-width; the value alone when the half-width is NaN)."""
    return f"{x:+.{digits}f}" + (f" ± {half:.{digits}f}" if np.isfinite(half) else "")


def effects_wide(long: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """:func:`effects` as the book shows it: rows = (side, flipped difference), columns = metrics,
    cells ``"+0.030 ± 0.001 up"`` (effect, 95% half-width, and :data:`EFFECT_MARK` of its verdict)."""
    if long.empty:
        return pd.DataFrame()
    txt = long.assign(text=[f"{_pm(r.effect, r.half, digits)} {EFFECT_MARK[r.verdict]}" for r in long.itertuples()])
    side_label = {"vsae": "vSAE −", "topk": "TopK +"}
    txt["run"] = [f"{side_label.get(s, s)} {d}" for s, d in zip(txt.side, txt.difference)]
    order = list(dict.fromkeys(txt.run))
    wide = txt.pivot(index="run", columns="metric", values="text")
    return wide.loc[order, list(dict.fromkeys(long.metric))].rename_axis(index=None, columns=None)


# ----------------------------------------------------------------------------------- learning rate
def ladder_lr_runs(table: pd.DataFrame) -> pd.DataFrame:
    """The four learning-rate cells inside a ladder table: each architecture at its own learning rate
    (the ``recipe`` rungs) and at the other's (the ``lr`` rungs), as :meth:`Experiment.lr_matched`
    rows (``arch``, ``lr_of``, ``seed`` and the metrics)."""
    t = table[table.rung.isin([RECIPE, "lr"])].copy()
    other = {"topk": "vsae", "vsae": "topk"}
    t["arch"] = t.side
    t["lr_of"] = [s if r == RECIPE else other[s] for s, r in zip(t.side, t.rung)]
    return t.drop(columns=["side", "rung"])


LR_SETTINGS = (("own", "each at its own learning rate"), ("topk", "both at TopK's learning rate"),
               ("vsae", "both at the vSAE's learning rate"))


def matched_lr(runs: pd.DataFrame, metrics: Sequence[str], confidence: float = 0.95) -> pd.DataFrame:
    """TopK − vSAE per metric in three settings (:data:`LR_SETTINGS`): each at its own learning rate
    (the headline comparison), both at TopK's, both at the vSAE's. ``runs``: rows with ``arch``,
    ``lr_of``, ``seed`` and the metrics. Returns ``setting, metric, topk, vsae, diff, half, verdict``
    (verdict of TopK > vSAE: *holds* = TopK higher, *reversed* = vSAE higher)."""
    rows = []
    for setting, _ in LR_SETTINGS:
        tk_lr, vs_lr = ("topk", "vsae") if setting == "own" else (setting, setting)
        tk = runs[(runs.arch == "topk") & (runs.lr_of == tk_lr)]
        vs = runs[(runs.arch == "vsae") & (runs.lr_of == vs_lr)]
        if tk.empty or vs.empty:
            continue
        for m in metrics:
            r = verdicts.compare(tk[m].to_numpy(float), vs[m].to_numpy(float), "greater", confidence=confidence)
            rows.append({"setting": setting, "metric": m, "topk": r["mean_a"], "vsae": r["mean_b"], "diff": r["diff"],
                         "half": r["half"], "verdict": r["verdict"], "n_seeds": min(r["n_a"], r["n_b"])})
    return pd.DataFrame(rows)




def matched_lr_wide(res: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """:func:`matched_lr` as a table: rows = settings, columns = metrics, cells
    ``"+0.005 ± 0.002 (TopK higher)"`` (TopK − vSAE)."""
    labels = dict(LR_SETTINGS)
    t = res.assign(text=[f"{_pm(r.diff, r.half, digits)} ({verdicts.LEADER[r.verdict]})" for r in res.itertuples()],
                   row=[labels[s] for s in res.setting])
    order = list(dict.fromkeys(t.row))
    return t.pivot(index="row", columns="metric", values="text").loc[order, list(dict.fromkeys(res.metric))] \
        .rename_axis(index=None, columns=None)


def matched_lr_sentence(res: pd.DataFrame, labels: dict[str, str] | None = None, budget: str = "",
                        lrs: dict[str, float] | None = None) -> str:
    """Per metric, whether the TopK − vSAE comparison at their own learning rates survives matching
    them: *the same* at both matched rates, *a learning-rate effect* when both matched rates agree
    with each other and not with the own-rates result, otherwise *depends on the rate*. ``lrs``
    (``{"topk": ..., "vsae": ...}``, the recipes' rates): when they coincide there is nothing to match."""
    labels = labels or {}
    if lrs and abs(lrs["topk"] - lrs["vsae"]) <= 1e-12 * max(abs(lrs["topk"]), 1.0):
        return (f"TopK − vSAE{(' ' + budget) if budget else ''}: the two recipes' learning rates coincide in "
                f"this profile ({lrs['topk']:.2g}), so there is no learning-rate mismatch to separate.")
    lines = []
    for m, grp in res.groupby("metric", sort=False):
        v = dict(zip(grp.setting, grp.verdict))
        d = dict(zip(grp.setting, grp["diff"]))
        name = labels.get(m, m)
        if not {"own", "topk", "vsae"} <= set(v):
            continue
        cells = (f"own rates {verdicts.LEADER[v['own']]} ({d['own']:+.3f}), at TopK's rate {verdicts.LEADER[v['topk']]} "
                 f"({d['topk']:+.3f}), at the vSAE's rate {verdicts.LEADER[v['vsae']]} ({d['vsae']:+.3f})")
        if v["own"] == v["topk"] == v["vsae"]:
            verdict = "the comparison does not depend on the learning-rate mismatch"
        elif v["topk"] == v["vsae"]:
            verdict = (f"at matched rates it is **{verdicts.LEADER[v['topk']]}** either way, so the own-rates result "
                       f"({verdicts.LEADER[v['own']]}) comes from the learning-rate mismatch, not the architecture")
        else:
            verdict = "the comparison **depends on the learning rate**"
        lines.append(f"* **{name}**: {cells}; {verdict}.")
    head = f"TopK − vSAE{(' ' + budget) if budget else ''}, 95% Welch intervals over seeds:"
    return head + "\n" + "\n".join(lines)


# ------------------------------------------------------------------------------------- the mechanism
#: a single difference "explains most" of the gap when removing it closes at least this share
MOST = 0.5


def mechanism_from_ladder(att: pd.DataFrame, budget: str) -> str:
    """The book's statement on what kills the vSAE's features, from the fraction-alive attribution
    (:func:`attribute` on ``frac_alive``) of the ladder: which removals close the gap (necessary
    causes), whether any vSAE difference added to TopK alone opens it (sufficient causes), the KL
    term's share, and the verdict on the paper's reading that the KL term kills the features."""
    g = att.attrs["gap"]
    seeds = int(att["n_seeds"].max()) if len(att) else 0
    if g["verdict"] != verdicts.HOLDS:
        return (f"At {budget}, TopK keeps {g['topk']:.3f} of its latents alive and the vSAE {g['vsae']:.3f}: "
                f"the gap is {g['verdict']}, so there is no feature death to attribute.")
    vs = att[att.side == "vsae"].set_index("difference")
    tk = att[att.side == "topk"].set_index("difference")
    closes = vs[vs.verdict == verdicts.HOLDS].sort_values("share", ascending=False)
    opens = tk[(tk.verdict == verdicts.REVERSED) & (tk.share > 0.05)].sort_values("share", ascending=False)
    inter = interaction(att)

    def pct(r):
        return f"{r.share:.0%} (alive {r.recipe:.3f} → {r.flipped:.3f})"

    out = [f"At {budget} ({seeds} seeds per run), TopK keeps {g['topk']:.3f} of its latents alive and the vSAE "
           f"{g['vsae']:.3f} (gap {g['gap']:.3f} ± {g['half']:.3f})."]
    if len(closes):
        out.append("Removing one vSAE difference at a time closes: "
                   + "; ".join(f"**{d}** {pct(r)}" for d, r in closes.iterrows()) + ".")
    else:
        out.append("No single vSAE difference, removed, closes a separated part of the gap.")
    if len(opens):
        out.append("Added to TopK alone, " + "; ".join(f"**{d}** opens {r.share:.0%}" for d, r in opens.iterrows())
                   + " of the gap.")
    else:
        largest = float(tk["share"].max()) if len(tk) else float("nan")
        out.append(f"No vSAE difference added to TopK alone kills its latents (largest share {largest:.0%}): "
                   f"the death needs several of the vSAE's differences together.")
    out.append(f"The single removals add up to {inter['vsae']['sum_of_shares']:.0%} of the gap"
               + (" — the differences interact, they do not add." if abs(inter["vsae"]["unexplained"]) > 0.25 else "."))
    if "kl" in vs.index:
        kl = vs.loc["kl"]
        top = closes.index[0] if len(closes) else None
        if kl.verdict != verdicts.HOLDS:
            claim = "**not supported**: removing the KL term does not separate from the vSAE recipe"
        elif kl.share >= MOST and top == "kl":
            claim = f"**supported**: removing the KL term alone closes {kl.share:.0%} of the gap, the largest share"
        else:
            claim = (f"**only partly supported**: removing the KL term closes {kl.share:.0%} of the gap, while "
                     f"removing the {top} closes {closes.loc[top, 'share']:.0%}")
        if "kl" in tk.index and tk.loc["kl"].verdict != verdicts.REVERSED:
            claim += ", and the same penalty on TopK kills no latents"
        out.append(f"The paper's reading, that the KL term kills the features, is {claim}.")
    return " ".join(out)


# ---------------------------------------------------------------------- ablation metrics vs controls
#: (a, b) pairs the ablation-control table compares, with what a holding "a > b" would say
CONTROL_PAIRS = (("vsae", "topk"), ("vsae", "size_matched"), ("vsae", "random"), ("topk", "random"),
                 ("size_matched", "random"))
CONTROL_LABELS = {"topk": "TopK", "vsae": "vSAE", "size_matched": "size-matched TopK", "random": "random TopK"}


def control_comparisons(runs: pd.DataFrame, metrics: Sequence[str], pairs=CONTROL_PAIRS,
                        confidence: float = 0.95) -> pd.DataFrame:
    """For each metric and each pair ``(a, b)`` of ``control`` groups: ``mean(a) - mean(b)`` with its
    95% Welch interval and the verdict of ``a > b`` (``metric, a, b, mean_a, mean_b, diff, half, verdict``)."""
    rows = []
    for m in metrics:
        for a, b in pairs:
            va = runs.loc[runs.control == a, m].to_numpy(float)
            vb = runs.loc[runs.control == b, m].to_numpy(float)
            if not (np.isfinite(va).any() and np.isfinite(vb).any()):
                continue
            r = verdicts.compare(va, vb, "greater", confidence=confidence)
            rows.append({"metric": m, "a": a, "b": b, "mean_a": r["mean_a"], "mean_b": r["mean_b"], "diff": r["diff"],
                         "half": r["half"], "verdict": r["verdict"]})
    return pd.DataFrame(rows)


def control_sentence(comp: pd.DataFrame, labels: dict[str, str] | None = None, higher_is_better: dict | None = None) -> str:
    """Per metric: how the vSAE stands against TopK, the size-matched TopK and the random null, and
    what follows — whether its advantage survives a TopK dictionary of its live size (else it goes with
    the small, dense dictionary) and whether the trained SAEs beat an untrained one at all."""
    labels, hib = labels or {}, higher_is_better or {}
    word = {verdicts.HOLDS: "above", verdicts.REVERSED: "below", verdicts.NOT_SEPARATED: "not separated from"}
    lines = []
    for m, g in comp.groupby("metric", sort=False):
        G = {(r.a, r.b): r for r in g.itertuples()}
        name = labels.get(m, m)
        bits = [f"vSAE {word[G[p].verdict]} {CONTROL_LABELS[p[1]]} ({_pm(G[p].diff, G[p].half)})"
                for p in (("vsae", "topk"), ("vsae", "size_matched"), ("vsae", "random")) if p in G]
        good = hib.get(m, True)
        better = verdicts.HOLDS if good else verdicts.REVERSED
        tail = []
        if ("vsae", "topk") in G and ("vsae", "size_matched") in G and G[("vsae", "topk")].verdict == better:
            tail.append("The vSAE's advantage over TopK survives a TopK SAE of its live size"
                        if G[("vsae", "size_matched")].verdict == better else
                        "A TopK SAE of the vSAE's live size removes the vSAE's advantage: it goes with the small, dense dictionary")
        nulls = [CONTROL_LABELS[a] for a in ("vsae", "topk", "size_matched")
                 if (a, "random") in G and G[(a, "random")].verdict != better]
        if nulls:
            tail.append(f"Not better than the untrained null: {', '.join(nulls)}")
        lines.append(f"* **{name}** ({'higher' if good else 'lower'} is better): " + "; ".join(bits) + "."
                     + "".join(f" {t}." for t in tail))
    return "\n".join(lines)
